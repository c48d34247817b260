//! TLS, with a CA made here by openssl: keyward on Redis over TLS
//! (`rediss://`, Debian's redis-server with `--tls-port` and
//! `--tls-auth-clients yes`), with and without what it needs; and keyward's
//! own listener over HTTPS, mTLS, and a certificate renewed on disk.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyward::config::{Config, ListenerTls, RedisTls};
use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::json;

use crate::helpers::{
    free_port, random_id, raw, render_acl, test_config, TestApp, TestRedis, ADMIN_TOKEN,
    MANAGER_PASSWORD, MIGRATOR_PASSWORD, VALIDATOR_PASSWORD,
};

/// A directory of CAs and the certificates they issue, removed on drop.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(random_id("keyward-test-pki-"));
        std::fs::create_dir_all(&dir).unwrap();
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A self-signed CA: `<name>.crt`, `<name>.key`.
    pub fn ca(&self, name: &str) -> &Self {
        let (crt, key, subject) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("/CN={name}"),
        );
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        self
    }

    /// `<name>.crt` and `<name>.key`, issued by the CA `ca` for localhost
    /// and 127.0.0.1, for servers and clients alike.
    pub fn issue(&self, ca: &str, name: &str) -> &Self {
        let (crt, key, csr, ext) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.path(&ext),
            "basicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        let subject = format!("/CN={name}");
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &subject,
        ]);
        let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        self
    }

    /// The certificate of `<name>.crt`, as a TLS peer presents it.
    fn der(&self, name: &str) -> Vec<u8> {
        let cert = CertificateDer::from_pem_file(self.path(&format!("{name}.crt"))).unwrap();
        cert.as_ref().to_vec()
    }

    /// `<name>.crt` and `<name>.key` as one PEM, for reqwest.
    fn identity(&self, name: &str) -> reqwest::Identity {
        let read = |ext: &str| std::fs::read(self.path(&format!("{name}.{ext}"))).unwrap();
        reqwest::Identity::from_pem(&[read("crt"), read("key")].concat()).unwrap()
    }

    fn root(&self, ca: &str) -> reqwest::Certificate {
        let pem = std::fs::read(self.path(&format!("{ca}.crt"))).unwrap();
        reqwest::Certificate::from_pem(&pem).unwrap()
    }

    /// The client files keyward presents to Redis: trusting `ca`, with the
    /// certificate `client` (if any).
    fn redis_tls(&self, ca: &str, client: Option<&str>) -> RedisTls {
        RedisTls {
            ca_file: Some(self.path(&format!("{ca}.crt"))),
            cert_file: client.map(|c| self.path(&format!("{c}.crt"))),
            key_file: client.map(|c| self.path(&format!("{c}.key"))),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A CA `ca`, with `redis` and `keyward` certificates from it, and a
/// Redis on TCP (for the test's inspection) and on a TLS port that requires
/// a client certificate from `ca`.
fn tls_redis() -> (Pki, Arc<TestRedis>, u16) {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "redis").issue("ca", "keyward");
    let port = free_port();
    let file = |name: &str| pki.path(name).display().to_string();
    let redis = TestRedis::start_with_tls(vec![
        "--tls-port".into(),
        port.to_string(),
        "--tls-cert-file".into(),
        file("redis.crt"),
        "--tls-key-file".into(),
        file("redis.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "yes".into(),
    ]);
    (pki, Arc::new(redis), port)
}

fn rediss(port: u16, user: &str, password: &str) -> String {
    format!("rediss://{user}:{password}@localhost:{port}")
}

/// A test configuration on the TLS port of `port`, with `tls`.
fn config_on_tls(redis: &TestRedis, port: u16, tls: RedisTls) -> Config {
    let mut config = test_config(
        redis.url("validator", VALIDATOR_PASSWORD),
        redis.url("manager", MANAGER_PASSWORD),
    );
    config.redis_url = rediss(port, "validator", VALIDATOR_PASSWORD).into();
    config.admin_redis_url = Some(rediss(port, "manager", MANAGER_PASSWORD).into());
    config.redis_tls = tls;
    config
}

/// What `keyward::run` fails with at start-up on `config`.
async fn start_up_error(config: Config) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listeners = keyward::Listeners {
        main: listener,
        metrics: None,
    };
    let run = keyward::run(config, listeners, std::future::pending());
    match tokio::time::timeout(Duration::from_secs(20), run).await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(())) => panic!("keyward stopped without an error"),
        Err(_) => panic!("keyward started"),
    }
}

#[tokio::test]
async fn keyward_on_rediss_with_a_client_certificate_mints_validates_and_is_ready() {
    let (pki, redis, port) = tls_redis();
    let config = config_on_tls(&redis, port, pki.redis_tls("ca", Some("keyward")));
    let app = TestApp::serve(config, Some(redis.clone())).await;

    let project = app.project().await;
    let key = app.mint(&project, json!({})).await;
    assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    assert_eq!(app.get("/ready", None).await.status(), StatusCode::OK);

    // Every connection of keyward's users came in on the TLS port.
    let keyward = crate::helpers::keyward_clients(&redis).await;
    let tls_port = format!(" laddr=127.0.0.1:{port} ");
    assert!(keyward.iter().all(|c| c.contains(&tls_port)), "{keyward:?}");
}

#[tokio::test]
async fn without_a_client_certificate_keyward_does_not_start_and_says_why() {
    let (pki, redis, port) = tls_redis();
    let error = start_up_error(config_on_tls(&redis, port, pki.redis_tls("ca", None))).await;
    assert!(error.contains("validator"), "{error}");
    assert!(error.contains("KEYWARD_REDIS_CERT_FILE"), "{error}");
}

#[tokio::test]
async fn trusting_another_ca_keyward_does_not_start_and_says_why() {
    let (pki, redis, port) = tls_redis();
    pki.ca("other");
    let tls = pki.redis_tls("other", Some("keyward"));
    let error = start_up_error(config_on_tls(&redis, port, tls)).await;
    assert!(error.contains("KEYWARD_REDIS_CA_FILE"), "{error}");
    assert!(error.contains("UnknownIssuer"), "{error}");
}

#[tokio::test]
async fn a_tls_file_that_does_not_load_is_a_configuration_error_naming_its_variable() {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "keyward");
    std::fs::write(pki.path("junk.pem"), "not a certificate\n").unwrap();
    let (ca, junk) = (pki.path("ca.crt"), pki.path("junk.pem"));
    let (crt, key) = (pki.path("keyward.crt"), pki.path("keyward.key"));
    let (ca, junk, crt, key, missing) = (
        ca.to_str().unwrap(),
        junk.to_str().unwrap(),
        crt.to_str().unwrap(),
        key.to_str().unwrap(),
        "/nonexistent/keyward.pem",
    );
    let url = "rediss://validator:pw@localhost:6379";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("KEYWARD_REDIS_CA_FILE", missing)],
            "KEYWARD_REDIS_CA_FILE",
        ),
        (&[("KEYWARD_REDIS_CA_FILE", junk)], "KEYWARD_REDIS_CA_FILE"),
        (
            &[
                ("KEYWARD_REDIS_CA_FILE", ca),
                ("KEYWARD_REDIS_CERT_FILE", crt),
            ],
            "KEYWARD_REDIS_KEY_FILE",
        ),
        (
            &[
                ("KEYWARD_REDIS_CA_FILE", ca),
                ("KEYWARD_REDIS_CERT_FILE", crt),
                ("KEYWARD_REDIS_KEY_FILE", junk),
            ],
            "KEYWARD_REDIS_KEY_FILE",
        ),
        (
            &[
                ("KEYWARD_TLS_CERT_FILE", junk),
                ("KEYWARD_TLS_KEY_FILE", key),
            ],
            "KEYWARD_TLS_CERT_FILE",
        ),
        (&[("KEYWARD_TLS_CERT_FILE", crt)], "KEYWARD_TLS_KEY_FILE"),
        (
            &[("KEYWARD_TLS_CLIENT_CA_FILE", ca)],
            "KEYWARD_TLS_CLIENT_CA_FILE",
        ),
        (
            &[
                ("KEYWARD_TLS_CERT_FILE", crt),
                ("KEYWARD_TLS_KEY_FILE", key),
                ("KEYWARD_TLS_CLIENT_CA_FILE", missing),
            ],
            "KEYWARD_TLS_CLIENT_CA_FILE",
        ),
    ];
    for (vars, var) in cases {
        let lookup = |name: &str| match name {
            "KEYWARD_REDIS_URL" => Some(url.to_owned()),
            _ => vars
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string()),
        };
        let err = Config::from_lookup(lookup).unwrap_err();
        assert_eq!(err.var, *var, "{vars:?}: {err}");
    }
    // Files for rediss:// without any rediss:// URL are a mistake too.
    let err = Config::from_lookup(|name| match name {
        "KEYWARD_REDIS_URL" => Some("redis://validator:pw@localhost:6379".into()),
        "KEYWARD_REDIS_CA_FILE" => Some(ca.into()),
        _ => None,
    })
    .unwrap_err();
    assert_eq!(err.var, "KEYWARD_REDIS_CA_FILE", "{err}");
}

#[tokio::test]
async fn keyward_migrate_connects_over_tls_with_the_same_variables() {
    let (pki, redis, port) = tls_redis();
    let ops = redis.ops().await;
    let on = format!(">{MIGRATOR_PASSWORD}");
    raw(
        &ops,
        "ACL",
        vec!["SETUSER".into(), "migrator".into(), "on".into(), on],
    )
    .await
    .unwrap();
    let run = |client: Option<&str>| {
        let tls = pki.redis_tls("ca", client);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.arg("migrate")
            .env(
                "KEYWARD_MIGRATE_REDIS_URL",
                rediss(port, "migrator", MIGRATOR_PASSWORD),
            )
            .env("KEYWARD_REDIS_CA_FILE", tls.ca_file.unwrap());
        if let (Some(cert), Some(key)) = (tls.cert_file, tls.key_file) {
            cmd.env("KEYWARD_REDIS_CERT_FILE", cert)
                .env("KEYWARD_REDIS_KEY_FILE", key);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text.into_owned())
    };
    let (ok, text) = run(Some("keyward"));
    assert!(ok, "{text}");
    let (ok, text) = run(None);
    assert!(!ok && text.contains("KEYWARD_REDIS_CERT_FILE"), "{text}");
}

/// A Redis Cluster over TLS only (clients, bus and replication), from
/// `redis/local.sh cluster-start ... tls`, stopped on drop.
struct TlsCluster {
    dir: PathBuf,
    seeds: String,
}

impl TlsCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(random_id("keyward-test-tls-cluster-"));
        std::fs::create_dir_all(&dir).unwrap();
        let template = dir.join("template.acl");
        std::fs::write(&template, render_acl(&[])).unwrap();
        let mut last_error = String::new();
        for _ in 0..5 {
            // Six ports and their bus ports (+10000), below the ephemeral ones.
            let base = free_port() % 12_000 + 10_000;
            let out = Command::new("bash")
                .arg(crate::helpers::repo().join("redis/local.sh"))
                .args(["cluster-start", &base.to_string()])
                .arg(dir.join("cluster"))
                .arg(&template)
                .arg("tls")
                .env("KEYWARD_CLUSTER_OWNER", std::process::id().to_string())
                .output()
                .unwrap();
            if out.status.success() {
                let seeds = String::from_utf8(out.stdout).unwrap().trim().to_owned();
                return TlsCluster { dir, seeds };
            }
            last_error = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        panic!("cannot start the TLS cluster: {last_error}");
    }

    fn url(&self, user: &str, password: &str) -> String {
        format!("rediss-cluster://{user}:{password}@{}", self.seeds)
    }

    fn files(&self) -> RedisTls {
        let tls = self.dir.join("cluster/tls");
        RedisTls {
            ca_file: Some(tls.join("ca.crt")),
            cert_file: Some(tls.join("client.crt")),
            key_file: Some(tls.join("client.key")),
        }
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(crate::helpers::repo().join("redis/local.sh"))
            .arg("cluster-stop")
            .arg(self.dir.join("cluster"))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every master over TLS: keyward's pools connect to each at start, the
/// seed nodes and the others by the addresses `CLUSTER SLOTS` gives (their
/// certificates name 127.0.0.1).
#[tokio::test]
async fn keyward_on_a_tls_redis_cluster_connects_to_every_master_and_mints_and_validates() {
    let cluster = TlsCluster::start();
    let mut config = test_config(
        "redis-cluster://validator:x@127.0.0.1:1".into(),
        "redis-cluster://manager:x@127.0.0.1:1".into(),
    );
    config.redis_url = cluster.url("validator", VALIDATOR_PASSWORD).into();
    config.admin_redis_url = Some(cluster.url("manager", MANAGER_PASSWORD).into());
    config.redis_tls = cluster.files();
    let app = TestApp::serve(config, None).await;
    let project = app.project().await;
    // Keys in slots all over the cluster (a key's slot is its name's hash).
    for _ in 0..12 {
        let key = app.mint(&project, json!({})).await;
        assert_eq!(app.status(&key.api_key).await, StatusCode::OK);
    }
    assert_eq!(app.get("/ready", None).await.status(), StatusCode::OK);
}

/// keyward (on a plain Redis) with its public listener over TLS, stopped
/// on drop.
pub struct Https {
    pub addr: SocketAddr,
    app: TestApp,
}

impl Https {
    /// keyward serving `server`'s certificate; `client_ca` makes it mTLS.
    pub async fn start(pki: &Pki, server: &str, client_ca: Option<&str>) -> Self {
        let redis = Arc::new(TestRedis::start());
        let mut config = test_config(
            redis.url("validator", VALIDATOR_PASSWORD),
            redis.url("manager", MANAGER_PASSWORD),
        );
        config.tls = ListenerTls {
            cert_file: Some(pki.path(&format!("{server}.crt"))),
            key_file: Some(pki.path(&format!("{server}.key"))),
            client_ca_file: client_ca.map(|ca| pki.path(&format!("{ca}.crt"))),
            reload: Duration::from_millis(100),
        };
        let app = TestApp::start(config, Some(redis)).await;
        Https {
            addr: app.addr,
            app,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    /// `/health` through `client`, polled until keyward is up: its status,
    /// HTTP version and the server certificate it saw.
    pub async fn health(
        &self,
        client: &reqwest::Client,
    ) -> Result<(StatusCode, reqwest::Version, Vec<u8>), String> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match client.get(self.url("/health")).send().await {
                Ok(r) => {
                    let cert = r
                        .extensions()
                        .get::<reqwest::tls::TlsInfo>()
                        .and_then(|info| info.peer_certificate())
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default();
                    return Ok((r.status(), r.version(), cert));
                }
                // Refused: not listening yet. Anything else is TLS's answer.
                Err(e) if e.is_connect() && Instant::now() < deadline && is_refused(&e) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }

    async fn shutdown(&mut self) -> keyward::Result<()> {
        self.app.shutdown().await
    }
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut cause: &dyn std::error::Error = e;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string().contains("refused")
}

/// A client trusting `ca` only, presenting `identity` (if any), with a
/// connection of its own per request.
pub fn client(pki: &Pki, ca: &str, identity: Option<&str>) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(pki.root(ca))
        .tls_info(true)
        .timeout(Duration::from_secs(5));
    match identity {
        Some(name) => builder.identity(pki.identity(name)),
        None => builder,
    }
}

#[tokio::test]
async fn the_listener_over_https_speaks_http2_and_http1_by_alpn_and_no_plain_http() {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "server");
    let mut app = Https::start(&pki, "server", None).await;

    let h2 = client(&pki, "ca", None).build().unwrap();
    let (status, version, cert) = app.health(&h2).await.unwrap();
    assert_eq!(
        (status, version),
        (StatusCode::OK, reqwest::Version::HTTP_2)
    );
    assert_eq!(cert, pki.der("server"));
    let h1 = client(&pki, "ca", None).http1_only().build().unwrap();
    let (status, version, _) = app.health(&h1).await.unwrap();
    assert_eq!(
        (status, version),
        (StatusCode::OK, reqwest::Version::HTTP_11)
    );
    // The API itself, over TLS.
    let r = h2
        .post(app.url("/v1/validate-key"))
        .json(&json!({ "api_key": "sk-proj.nope.nope.nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health", app.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");

    // Graceful shutdown still ends `run`.
    app.shutdown().await.unwrap();
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_from_its_ca_and_serves_one_with() {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "server").issue("ca", "gateway");
    pki.ca("other").issue("other", "stranger");
    let app = Https::start(&pki, "server", Some("ca")).await;

    let with = client(&pki, "ca", Some("gateway")).build().unwrap();
    let (status, _, _) = app.health(&with).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    for (name, identity) in [("no certificate", None), ("another CA's", Some("stranger"))] {
        for builder in [
            client(&pki, "ca", identity),
            client(&pki, "ca", identity).http1_only(),
        ] {
            let got = app.health(&builder.build().unwrap()).await;
            assert!(got.is_err(), "{name}: {got:?}");
        }
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_served_to_new_connections_and_a_bad_one_keeps_the_last() {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "server");
    let app = Https::start(&pki, "server", None).await;
    let first = pki.der("server");
    let kept = client(&pki, "ca", None).build().unwrap();
    let (_, _, cert) = app.health(&kept).await.unwrap();
    assert_eq!(cert, first);

    // Renewed as certbot and cert-manager do: new files moved into place.
    pki.issue("ca", "renewed");
    for ext in ["key", "crt"] {
        let from = pki.path(&format!("renewed.{ext}"));
        std::fs::rename(from, pki.path(&format!("server.{ext}"))).unwrap();
    }
    let renewed = pki.der("server");
    assert_ne!(renewed, first);
    let served = |pool: usize| {
        let client = client(&pki, "ca", None).pool_max_idle_per_host(pool);
        let client = client.build().unwrap();
        let app = &app;
        async move { app.health(&client).await.unwrap().2 }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while served(0).await != renewed {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the renewal was not dropped.
    let (status, _, cert) = app.health(&kept).await.unwrap();
    assert_eq!((status, cert), (StatusCode::OK, first));

    // A renewed file that does not parse: the last certificate stays.
    std::fs::write(
        pki.path("server.crt"),
        "-----BEGIN CERTIFICATE-----\ngarbage\n",
    )
    .unwrap();
    // No event to wait for: several reload intervals (100 ms) pass.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(served(0).await, renewed);
}

/// `keyward healthcheck` and the CLI against an mTLS listener: the probe
/// with the client certificate it is given, the CLI with it and the
/// private CA.
#[tokio::test]
async fn healthcheck_and_the_cli_speak_https_with_a_private_ca_and_a_client_certificate() {
    let pki = Pki::new();
    pki.ca("ca").issue("ca", "server").issue("ca", "probe");
    let app = Https::start(&pki, "server", Some("ca")).await;
    let with = client(&pki, "ca", Some("probe")).build().unwrap();
    app.health(&with).await.unwrap();
    let file = |name: &str| pki.path(name);
    let keyward = |args: &[&str], vars: &[(&str, PathBuf)]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.args(args)
            .env("KEYWARD_LISTEN", app.addr.to_string())
            .env("KEYWARD_TLS_CERT_FILE", file("server.crt"))
            .env("KEYWARD_URL", app.url(""))
            .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(vars.iter().cloned())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        async move { cmd.status().await.unwrap().code() }
    };
    let cert = [
        ("KEYWARD_URL_CERT_FILE", file("probe.crt")),
        ("KEYWARD_URL_KEY_FILE", file("probe.key")),
    ];
    let ca = ("KEYWARD_URL_CA_FILE", file("ca.crt"));
    let all = [cert[0].clone(), cert[1].clone(), ca.clone()];
    assert_eq!(keyward(&["healthcheck"], &cert).await, Some(0));
    assert_eq!(keyward(&["healthcheck"], &[]).await, Some(1));
    assert_eq!(keyward(&["whoami"], &all).await, Some(0));
    // Without the private CA, or without the certificate: unreachable.
    assert_eq!(keyward(&["whoami"], &cert).await, Some(3));
    assert_eq!(keyward(&["whoami"], &[ca]).await, Some(3));
}
