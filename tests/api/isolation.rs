//! Per-client deployments isolated by Redis ACLs: rules from `keyward acl`,
//! loaded into a real Redis, enforced by Redis itself.

use std::sync::Arc;

use keyward::acl::{rule, Role};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, raw, TestApp, TestRedis, ADMIN_TOKEN};

const PW_A: &str = "gateway-a-password";
const PW_B: &str = "gateway-b-password";
const ADMIN_PW_A: &str = "admin-a-password";
const ADMIN_PW_B: &str = "admin-b-password";

/// Rules for two clients: gateway-a/admin-a on `alpha`, gateway-b/admin-b on `beta`.
fn two_clients() -> String {
    [
        rule(
            "gw-a",
            Role::Validator,
            &["alpha"],
            &[PW_A.into()],
            "test-gateway",
        ),
        rule(
            "adm-a",
            Role::Manager,
            &["alpha"],
            &[ADMIN_PW_A.into()],
            "test-gateway",
        ),
        rule(
            "gw-b",
            Role::Validator,
            &["beta"],
            &[PW_B.into()],
            "test-gateway",
        ),
        rule(
            "adm-b",
            Role::Manager,
            &["beta"],
            &[ADMIN_PW_B.into()],
            "test-gateway",
        ),
    ]
    .map(|r| r.expect("valid rule"))
    .join("\n")
}

/// A keyward for one client on a shared Redis.
async fn deployment(
    redis: &Arc<TestRedis>,
    user: &str,
    pw: &str,
    admin: &str,
    admin_pw: &str,
) -> TestApp {
    let (url, admin_url) = (redis.url(user, pw), redis.url(admin, admin_pw));
    TestApp::spawn_with(redis.clone(), move |c| {
        c.redis_url = url.into();
        c.admin_redis_url = Some(admin_url.into());
        c.client_name = user.to_owned();
    })
    .await
}

#[tokio::test]
async fn two_deployments_each_validate_only_their_own_keys() {
    let redis = Arc::new(TestRedis::start_with_acl(&two_clients()));
    let a = deployment(&redis, "gw-a", PW_A, "adm-a", ADMIN_PW_A).await;
    let b = deployment(&redis, "gw-b", PW_B, "adm-b", ADMIN_PW_B).await;
    assert_eq!(
        a.create_project("alpha").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(b.create_project("beta").await.status(), StatusCode::CREATED);
    let key_a = a.mint("alpha", json!({})).await;
    let key_b = b.mint("beta", json!({})).await;

    a.validate(&key_a.api_key, StatusCode::OK).await;
    b.validate(&key_b.api_key, StatusCode::OK).await;
    let r = a.validate_response(&key_b.api_key).await;
    let body = assert_error(r, StatusCode::UNAUTHORIZED, "invalid_key").await;
    assert!(!body.to_string().contains("beta-") && body.get("project_id").is_none());
    let audit = a.last_audit(&key_b.key_id).await;
    assert_eq!(
        (audit["reason"].as_str(), audit["client"].as_str()),
        ("forbidden", "gw-a")
    );
    b.assert_denied(&key_a.api_key, &key_a.key_id, "forbidden")
        .await;
}

#[tokio::test]
async fn a_client_manager_cannot_touch_projects_outside_its_grant() {
    let redis = Arc::new(TestRedis::start_with_acl(&two_clients()));
    let a = deployment(&redis, "gw-a", PW_A, "adm-a", ADMIN_PW_A).await;
    let b = deployment(&redis, "gw-b", PW_B, "adm-b", ADMIN_PW_B).await;
    assert_eq!(b.create_project("beta").await.status(), StatusCode::CREATED);
    let key_b = b.mint("beta", json!({})).await;

    let mint = json!({ "project_id": "beta", "owner": "o", "server_name": "s" });
    assert_error(
        a.admin_post("/v1/mint-key", &mint).await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    assert_error(
        a.admin_get("/v1/admin/projects/beta").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    assert_error(
        a.admin_get("/v1/list-keys?project_id=beta").await,
        StatusCode::NOT_FOUND,
        "project_not_found",
    )
    .await;
    let revoke = json!({ "project_id": "beta", "key_id": key_b.key_id });
    assert_error(
        a.admin_post("/v1/revoke-key", &revoke).await,
        StatusCode::NOT_FOUND,
        "key_not_found",
    )
    .await;
    assert_eq!(
        a.create_project("beta").await.status(),
        StatusCode::NOT_FOUND
    );
    // Still valid: nothing of a's reached beta.
    b.validate(&key_b.api_key, StatusCode::OK).await;
}

#[tokio::test]
async fn raw_connections_with_a_clients_credentials_get_noperm_outside_its_grant() {
    let redis = TestRedis::start_with_acl(&two_clients());
    let gateway_a = redis.client("gw-a", PW_A).await;
    let admin_a = redis.client("adm-a", ADMIN_PW_A).await;
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let denied = [
        (&gateway_a, "JSON.GET", args(&["apikey:beta:k_abcdefg"])),
        (&gateway_a, "GET", args(&["ratelimit:key:beta:k_abcdefg:1"])),
        (
            &gateway_a,
            "JSON.SET",
            args(&["apikey:alpha:k_abcdefg", "$", "{}"]),
        ),
        (&gateway_a, "JSON.GET", args(&["project:alpha"])),
        (&gateway_a, "XRANGE", args(&["audit:keylookup", "-", "+"])),
        (
            &gateway_a,
            "XTRIM",
            args(&["audit:keylookup", "MAXLEN", "0"]),
        ),
        (&gateway_a, "DEL", args(&["audit:keylookup"])),
        (&gateway_a, "EXPIRE", args(&["apikey:alpha:k_abcdefg", "1"])),
        (&gateway_a, "EVAL", args(&["return 1", "0"])),
        (&admin_a, "JSON.GET", args(&["project:beta"])),
        (
            &admin_a,
            "JSON.SET",
            args(&["apikey:beta:k_abcdefg", "$", "{}"]),
        ),
        (
            &admin_a,
            "ZADD",
            args(&["apiprojectkeys:beta", "0", "k_abcdefg"]),
        ),
        (&admin_a, "XRANGE", args(&["audit:admin", "-", "+"])),
        (&admin_a, "DEL", args(&["project:alpha"])),
    ];
    for (client, cmd, args) in denied {
        let err = raw(client, cmd, args.clone()).await.expect_err(cmd);
        assert!(err.starts_with("NOPERM"), "{cmd} {args:?}: {err}");
    }
    assert!(
        raw(&gateway_a, "JSON.GET", args(&["apikey:alpha:k_abcdefg"]))
            .await
            .is_ok()
    );
    assert!(raw(
        &gateway_a,
        "XADD",
        args(&["audit:keylookup", "*", "a", "b"])
    )
    .await
    .is_ok());
    assert!(raw(&admin_a, "JSON.GET", args(&["project:alpha"]))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_password_rotation_accepts_both_during_the_overlap_then_only_the_new() {
    let redis = TestRedis::start();
    let inspector = redis.ops().await;
    let load = |passwords: &[&str]| {
        let line = rule(
            "gw",
            Role::Validator,
            &["alpha"],
            &passwords.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "test-gateway",
        )
        .unwrap();
        let mut acl = std::fs::read_to_string(redis.acl_file()).unwrap();
        acl = acl
            .lines()
            .filter(|l| !l.starts_with("user gw "))
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(redis.acl_file(), format!("{acl}\n{line}\n")).unwrap();
    };
    // AUTH on a fresh connection answers at once: OK or WRONGPASS.
    let can_login = |pw: &'static str| {
        let redis = &redis;
        async move {
            let fresh = redis.ops().await;
            raw(&fresh, "AUTH", vec!["gw".into(), pw.into()])
                .await
                .is_ok()
        }
    };

    load(&["old-password"]);
    raw(&inspector, "ACL", vec!["LOAD".into()]).await.unwrap();
    assert!(can_login("old-password").await);
    assert!(!can_login("new-password").await);

    load(&["old-password", "new-password"]);
    raw(&inspector, "ACL", vec!["LOAD".into()]).await.unwrap();
    assert!(
        can_login("old-password").await,
        "old password during the overlap"
    );
    assert!(
        can_login("new-password").await,
        "new password during the overlap"
    );

    load(&["new-password"]);
    raw(&inspector, "ACL", vec!["LOAD".into()]).await.unwrap();
    assert!(
        !can_login("old-password").await,
        "old password after the rotation"
    );
    assert!(can_login("new-password").await);
}

#[tokio::test]
async fn generated_rules_load_with_acl_load_and_survive_a_restart() {
    let redis = Arc::new(TestRedis::start());
    // Append the keyward binary's own output to the ACL file, then ACL LOAD.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["acl", "gw-a", "--projects", "alpha", "--role", "validator"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let password = stderr.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(
        !line.contains(&password),
        "the password itself must not be in the rule"
    );
    let mut acl = std::fs::read_to_string(redis.acl_file()).unwrap();
    acl.push_str(&line);
    std::fs::write(redis.acl_file(), acl).unwrap();
    raw(&redis.ops().await, "ACL", vec!["LOAD".into()])
        .await
        .unwrap();
    redis.client("gw-a", &password).await;

    redis.restart();
    let app = TestApp::spawn_with(redis.clone(), |c| {
        c.redis_url = redis.url("gw-a", &password).into();
    })
    .await;
    app.validate_fails(
        "sk-proj.alpha.k_abcdefgh.abcdefghijklmnopqrstuvwxyz0123456789",
        StatusCode::UNAUTHORIZED,
        "invalid_key",
    )
    .await;
    assert_eq!(app.last_audit("k_abcdefgh").await["reason"], "not_found");
    let _ = ADMIN_TOKEN;
}

/// Issue #36: two client deployments on one Redis, each with the validator,
/// manager and monitor users `keyward acl` prints for the `deployment`
/// audit layout. Each sees its own activity and admin trail, through the
/// API and `keyward audit`, and its monitor user is refused (`NOPERM`, by
/// Redis itself) on the other's streams: stolen, it reads no other client's
/// audit.
#[tokio::test]
async fn each_deployment_reads_only_its_own_audit_with_its_own_monitor_user() {
    use keyward::acl::Deployment;
    use keyward::config::AuditLayout;
    let own = |name| Deployment {
        name,
        audit: AuditLayout::Deployment,
    };
    let users = [
        ("gw-a", Role::Validator, "alpha", PW_A),
        ("adm-a", Role::Manager, "alpha", ADMIN_PW_A),
        ("mon-a", Role::Monitor, "alpha", "monitor-a-password"),
        ("gw-b", Role::Validator, "beta", PW_B),
        ("adm-b", Role::Manager, "beta", ADMIN_PW_B),
        ("mon-b", Role::Monitor, "beta", "monitor-b-password"),
    ];
    let acl: Vec<String> = users
        .iter()
        .map(|(user, role, project, pw)| {
            let deployment = own(if project == &"alpha" { "gw-a" } else { "gw-b" });
            rule(user, *role, &[project], &[pw.to_string()], deployment).unwrap()
        })
        .collect();
    let redis = Arc::new(TestRedis::start_with_acl(&acl.join("\n")));
    let mut apps = Vec::new();
    for (name, project, pw, admin_pw, monitor_pw) in [
        ("gw-a", "alpha", PW_A, ADMIN_PW_A, "monitor-a-password"),
        ("gw-b", "beta", PW_B, ADMIN_PW_B, "monitor-b-password"),
    ] {
        let suffix = &name[3..];
        let (url, admin_url, monitor_url) = (
            redis.url(name, pw),
            redis.url(&format!("adm-{suffix}"), admin_pw),
            redis.url(&format!("mon-{suffix}"), monitor_pw),
        );
        let app = TestApp::spawn_with(redis.clone(), move |c| {
            c.redis_url = url.into();
            c.admin_redis_url = Some(admin_url.into());
            c.monitor_redis_url = Some(monitor_url.into());
            c.client_name = name.to_owned();
            c.audit_layout = AuditLayout::Deployment;
        })
        .await;
        assert_eq!(
            app.create_project(project).await.status(),
            StatusCode::CREATED
        );
        let key = app.mint(project, json!({})).await;
        app.validate(&key.api_key, StatusCode::OK).await;
        apps.push((app, project, key));
    }
    for (i, (app, project, key)) in apps.iter().enumerate() {
        let (_, other_project, other_key) = &apps[1 - i];
        let activity: serde_json::Value = crate::helpers::eventually("activity", || async {
            let r = app
                .admin_get(&format!("/v1/activity?project_id={project}"))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            let body: serde_json::Value = r.json().await.unwrap();
            (!body["recent"].as_array().unwrap().is_empty()).then_some(body)
        })
        .await;
        assert!(activity.to_string().contains(&key.key_id));
        assert!(!activity.to_string().contains(&other_key.key_id));
        let r = app
            .admin_get(&format!("/v1/activity?project_id={other_project}"))
            .await;
        assert_ne!(r.status(), StatusCode::OK, "another client's project");
        let trail = app.admin_get("/v1/admin/audit").await;
        assert_eq!(trail.status(), StatusCode::OK);
        let trail = trail.text().await.unwrap();
        assert!(trail.contains(&key.key_id) && !trail.contains(&other_key.key_id));
        // `keyward audit`, the CLI's view of the same trail.
        let url = app.url("");
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_keyward"))
                .args(["audit", "--json"])
                .env("KEYWARD_URL", url)
                .env("KEYWARD_ADMIN_TOKEN", ADMIN_TOKEN)
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = String::from_utf8(out.stdout).unwrap();
        assert!(out.contains(&key.key_id) && !out.contains(&other_key.key_id));
    }
    // Redis itself refuses each monitor the other's streams.
    let mon_a = redis.client("mon-a", "monitor-a-password").await;
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    for stream in [
        "audit:gw-b:keylookup",
        "audit:gw-b:admin",
        "audit:keylookup",
        "audit:admin",
    ] {
        let err = raw(&mon_a, "XRANGE", args(&[stream, "-", "+"]))
            .await
            .expect_err(stream);
        assert!(err.starts_with("NOPERM"), "{stream}: {err}");
    }
    for (cmd, a) in [
        ("XRANGE", args(&["audit:gw-a:keylookup", "-", "+"])),
        ("XLEN", args(&["audit:gw-a:admin"])),
    ] {
        assert!(raw(&mon_a, cmd, a).await.is_ok(), "{cmd}");
    }
    let err = raw(&mon_a, "JSON.GET", args(&["apikey:alpha:k_abcdefg"]))
        .await
        .expect_err("a monitor reads no key");
    assert!(err.starts_with("NOPERM"), "{err}");
}
