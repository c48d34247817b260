//! The HTTP side of the command line: requests to keyward's API, and what
//! its answers mean for the exit code.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{RequestBuilder, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Map, Value};

use super::exit;

/// Why a command failed; each kind has its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad arguments or environment: exit 2.
    Usage(String),
    /// keyward refused: exit 1.
    Refused(String),
    /// keyward (or its Redis) unreachable or unavailable: exit 3.
    Unavailable(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Usage(_) => exit::USAGE,
            Failure::Refused(_) => exit::REFUSED,
            Failure::Unavailable(_) => exit::UNAVAILABLE,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Refused(m) | Failure::Unavailable(m) => m,
        }
    }
}

/// The admin token from `KEYWARD_ADMIN_TOKEN` or `KEYWARD_ADMIN_TOKEN_FILE`,
/// as the service reads its own ([`crate::config::secret`]): the root token
/// or an operator's, the same to the CLI (a bearer token either way).
fn admin_token(lookup: impl Fn(&str) -> Option<String>) -> Result<SecretString, Failure> {
    match crate::config::secret(lookup, "KEYWARD_ADMIN_TOKEN") {
        Ok(Some(token)) => Ok(token),
        Ok(None) => Err(Failure::Usage(
            "no admin token: set KEYWARD_ADMIN_TOKEN or KEYWARD_ADMIN_TOKEN_FILE \
             (never pass it as an argument)"
                .into(),
        )),
        Err(e) => Err(Failure::Usage(e.to_string())),
    }
}

/// `builder` trusting `https.ca_file` besides the system's roots, and
/// presenting `https.cert`, if set.
fn with_https(
    mut builder: reqwest::ClientBuilder,
    https: &super::Https,
) -> Result<reqwest::ClientBuilder, Failure> {
    let read = |var: &str, path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| Failure::Usage(format!("{var}: cannot read {}: {e}", path.display())))
    };
    if let Some(path) = &https.ca_file {
        let var = "KEYWARD_URL_CA_FILE";
        let bundle = reqwest::Certificate::from_pem_bundle(&read(var, path)?)
            .map_err(|e| Failure::Usage(format!("{var}: {}: {e}", path.display())))?;
        for cert in bundle {
            builder = builder.add_root_certificate(cert);
        }
    }
    match (&https.cert.cert_file, &https.cert.key_file) {
        (None, None) => Ok(builder),
        (Some(cert), Some(key)) => {
            let pem = [
                read("KEYWARD_URL_CERT_FILE", cert)?,
                read("KEYWARD_URL_KEY_FILE", key)?,
            ]
            .concat();
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Failure::Usage(format!(
                    "KEYWARD_URL_CERT_FILE and KEYWARD_URL_KEY_FILE: not a PEM certificate and key: {e}"
                ))
            })?;
            Ok(builder.identity(identity))
        }
        _ => Err(Failure::Usage(
            "KEYWARD_URL_CERT_FILE and KEYWARD_URL_KEY_FILE go together".into(),
        )),
    }
}

/// Everything but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A path segment, percent-encoded.
pub fn segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// A warning for a plain `http://` URL to a host other than this one: the
/// token (or the key `check` reads) would cross the network in clear.
fn cleartext_warning(base: &str) -> Option<String> {
    let url = reqwest::Url::parse(base).ok()?;
    let loopback = match url.host()? {
        url::Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    };
    (url.scheme() == "http" && !loopback).then(|| {
        format!(
            "{base} is plain http:// to another host: the token and keys cross the \
             network in clear (use https://, see README \"TLS\")"
        )
    })
}

/// keyward's HTTP API at one base URL, with or without the admin token.
pub struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<SecretString>,
}

impl Client {
    /// For admin commands: needs the admin token from the environment.
    pub fn admin(target: &super::Target) -> Result<Self, Failure> {
        let token = admin_token(|name| std::env::var(name).ok())?;
        Self::new(&target.url, &target.https, Some(token))
    }

    /// For `check`: no token.
    pub fn anonymous(url: &str, https: &super::Https) -> Result<Self, Failure> {
        Self::new(url, https, None)
    }

    fn new(url: &str, https: &super::Https, token: Option<SecretString>) -> Result<Self, Failure> {
        let base = url.trim_end_matches('/').to_owned();
        let valid = reqwest::Url::parse(&base)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !valid {
            return Err(Failure::Usage(format!(
                "--url / KEYWARD_URL: {url:?} is not an http:// or https:// URL"
            )));
        }
        if let Some(warning) = cleartext_warning(&base) {
            eprintln!("keyward: warning: {warning}");
        }
        let http = with_https(reqwest::Client::builder(), https)?
            // The token (or key) goes to the URL given and nowhere else: a
            // redirect is an answer, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            // Minting hashes with Argon2id; a busy service may queue it.
            .timeout(Duration::from_secs(60))
            .user_agent(concat!("keyward-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Failure::Usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client { base, http, token })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.token {
            Some(token) => request.bearer_auth(token.expose_secret()),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, Failure> {
        let request = self.authorized(self.http.get(self.url(path)).query(query));
        self.send(request).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let request = self.authorized(self.http.post(self.url(path)).json(body));
        self.send(request).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, Failure> {
        let request = self.authorized(self.http.delete(self.url(path)));
        self.send(request).await
    }

    fn unreachable(&self, e: &reqwest::Error) -> Failure {
        // reqwest's own message ("error sending request for url ...") hides
        // the cause, which is the innermost source ("Connection refused").
        let cause = if e.is_timeout() {
            "no answer in time".to_owned()
        } else {
            let mut cause: &dyn std::error::Error = e;
            while let Some(source) = cause.source() {
                cause = source;
            }
            cause.to_string()
        };
        Failure::Unavailable(format!("cannot reach keyward at {}: {cause}", self.base))
    }

    /// Sends an admin request; a 2xx answer's JSON, or the failure its
    /// status and error code mean.
    async fn send(&self, request: RequestBuilder) -> Result<Value, Failure> {
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let body: Option<Value> = serde_json::from_str(&text).ok();
        if status.is_success() {
            return body.ok_or_else(|| {
                Failure::Unavailable(format!(
                    "{} answered {status} with a body that is not JSON",
                    self.base
                ))
            });
        }
        Err(self.refusal(status, body.as_ref()))
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>) -> Failure {
        if status.is_redirection() {
            return Failure::Refused(format!(
                "{} answered HTTP {} (a redirect); the CLI follows none, so the token \
                 goes only to the URL it was given: point KEYWARD_URL at keyward itself",
                self.base,
                status.as_u16()
            ));
        }
        let code = body
            .and_then(|b| b["error"]["code"].as_str())
            .unwrap_or_default();
        let message = body
            .and_then(|b| b["error"]["message"].as_str())
            .unwrap_or_default();
        let detail = if code.is_empty() {
            format!("HTTP {}", status.as_u16())
        } else {
            format!("{message} ({code})")
        };
        match (status, code) {
            (StatusCode::UNAUTHORIZED, _) => Failure::Refused(format!(
                "the admin token was refused ({code}): check KEYWARD_ADMIN_TOKEN \
                 (an operator's token may have been revoked or have expired)"
            )),
            (StatusCode::NOT_FOUND, "not_found") => Failure::Refused(format!(
                "{} serves no admin API (not_found): is KEYWARD_ADMIN_TOKEN set where keyward runs?",
                self.base
            )),
            (s, _) if s.is_server_error() => {
                Failure::Unavailable(format!("keyward is unavailable: {detail}"))
            }
            (s, _) if code.is_empty() => Failure::Refused(format!(
                "unexpected answer from {}: HTTP {}",
                self.base,
                s.as_u16()
            )),
            _ => Failure::Refused(detail),
        }
    }

    /// `GET /v1/auth` with `key`, as a gateway would ask: whether it
    /// validates, and the headers the gateway would get back.
    ///
    /// `{"valid", "status", "headers": {name: value}, "error"}`, for any
    /// answer keyward gives; a failure only when it cannot be reached.
    pub async fn forward_auth(
        &self,
        key: &str,
        scopes: &[String],
        cost: Option<u64>,
        client_ip: Option<(&str, String)>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .get(self.url("/v1/auth"))
            .bearer_auth(key)
            // The audit entry shows where the check came from.
            .header("X-Forwarded-Uri", "/keyward-check");
        if !scopes.is_empty() {
            request = request.header("X-Keyward-Required-Scopes", scopes.join(","));
        }
        if let Some(cost) = cost {
            request = request.header("X-Keyward-Cost", cost);
        }
        if let Some((name, ip)) = client_ip {
            request = request.header(name, ip);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let mut headers = Map::new();
        for (name, value) in response.headers() {
            let name = name.as_str();
            let shown = name.starts_with("x-keyward-")
                || name.starts_with("x-ratelimit-")
                || name == "retry-after"
                || name == "www-authenticate";
            if shown {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                headers.insert(name.to_owned(), json!(value));
            }
        }
        let text = response.text().await.map_err(|e| self.unreachable(&e))?;
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .map(|b| b["error"].clone())
            .filter(|e| e.is_object());
        Ok(json!({
            "valid": status == StatusCode::OK,
            "status": status.as_u16(),
            "headers": headers,
            "error": error,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_warned_of_only_off_this_host() {
        for quiet in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://[::1]:8080",
            "https://keyward.example.com",
        ] {
            assert_eq!(cleartext_warning(quiet), None, "{quiet}");
        }
        for loud in ["http://keyward.example.com", "http://10.0.0.5:8080"] {
            assert!(cleartext_warning(loud).is_some(), "{loud}");
        }
    }

    fn token(vars: &[(&str, &str)]) -> Result<String, String> {
        admin_token(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
        .map(|t| t.expose_secret().to_owned())
        .map_err(|f| f.message().to_owned())
    }

    #[test]
    fn the_token_comes_from_the_variable_or_its_file_never_both() {
        assert_eq!(token(&[("KEYWARD_ADMIN_TOKEN", "abc \n")]).unwrap(), "abc");
        let file = std::env::temp_dir().join(format!("keyward-cli-token-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let path = file.to_str().unwrap();
        assert_eq!(
            token(&[("KEYWARD_ADMIN_TOKEN_FILE", path)]).unwrap(),
            "from-file"
        );
        assert!(token(&[
            ("KEYWARD_ADMIN_TOKEN", "a"),
            ("KEYWARD_ADMIN_TOKEN_FILE", path)
        ])
        .unwrap_err()
        .contains("not both"));
        assert!(token(&[]).unwrap_err().contains("KEYWARD_ADMIN_TOKEN"));
        assert!(
            token(&[("KEYWARD_ADMIN_TOKEN_FILE", "/nonexistent/keyward")])
                .unwrap_err()
                .contains("cannot read")
        );
        let _ = std::fs::remove_file(file);
    }

    #[test]
    fn only_http_urls_are_accepted() {
        let https = super::super::Https::default();
        assert!(Client::anonymous("http://127.0.0.1:8080/", &https).is_ok());
        assert!(Client::anonymous("https://keyward.internal", &https).is_ok());
        for bad in ["127.0.0.1:8080", "ftp://x", "not a url", ""] {
            let err = Client::anonymous(bad, &https).err().unwrap();
            assert_eq!(err.exit_code(), exit::USAGE, "{bad}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(segment("alpha-1_x"), "alpha-1_x");
        assert_eq!(segment("a/b"), "a%2Fb");
    }
}
