//! The browser the console's `browser_*` tests drive: a real Chromium
//! (Debian's `chromium` and `chromium-driver`, installed by
//! `tests/console/install-chromium.sh` when missing) over WebDriver with
//! fantoccini. One chromedriver and one browser serve every test: they run
//! on one shared Tokio runtime, one at a time ([`in_browser`]). chromedriver
//! runs under a small shell that kills its process group when this test
//! process exits, however it exits.
//!
//! [`Page::shot`] saves a screen at 1280 px and at phone width (390 px)
//! under `target/console-screenshots/`.

use std::future::Future;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::helpers::{free_port, random_id, repo, TestApp, ADMIN_TOKEN};

/// Desktop and phone viewport widths for screenshots.
const DESKTOP: (u32, u32) = (1280, 860);
const PHONE: (u32, u32) = (390, 844);
/// How long a step may take: generous, as CI runs other tests meanwhile.
const WAIT: Duration = Duration::from_secs(20);

/// The runtime every browser test runs on: the WebDriver session's task
/// lives here, so it must outlive any one test.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// chromedriver (and the Chromium it starts) under a shell that kills their
/// process group once its stdin closes, i.e. when this process exits.
struct Driver {
    _shell: Child,
    _lifeline: ChildStdin,
}

struct Browser {
    client: Client,
    _driver: Driver,
}

fn start_driver(port: u16, profile: &Path) -> Driver {
    let install = Command::new("bash")
        .arg(repo().join("tests/console/install-chromium.sh"))
        .status()
        .expect("run tests/console/install-chromium.sh");
    assert!(install.success(), "installing chromium failed");
    std::fs::create_dir_all(profile).unwrap();
    let script = r#"
        chromedriver --port="$1" </dev/null >"$2/chromedriver.log" 2>&1 &
        cat >/dev/null
        trap '' TERM
        kill -TERM 0
        sleep 1
        rm -rf "$2"
        kill -KILL 0
    "#;
    let mut shell = Command::new("bash")
        .args(["-c", script, "console-browser"])
        .arg(port.to_string())
        .arg(profile)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start chromedriver");
    let lifeline = shell.stdin.take().unwrap();
    Driver {
        _shell: shell,
        _lifeline: lifeline,
    }
}

async fn browser() -> &'static tokio::sync::Mutex<Browser> {
    static BROWSER: tokio::sync::OnceCell<tokio::sync::Mutex<Browser>> =
        tokio::sync::OnceCell::const_new();
    BROWSER
        .get_or_init(|| async {
            let started = Instant::now();
            let port = free_port();
            let profile = std::env::temp_dir().join(random_id("keyward-console-chromium-"));
            let driver = start_driver(port, &profile);
            let webdriver = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(20);
            while reqwest::get(format!("{webdriver}/status")).await.is_err() {
                assert!(Instant::now() < deadline, "chromedriver did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let args = [
                "--headless=new".to_owned(),
                "--no-sandbox".into(),
                "--disable-gpu".into(),
                "--disable-dev-shm-usage".into(),
                "--disable-background-networking".into(),
                "--disable-component-update".into(),
                "--disable-sync".into(),
                "--disable-quic".into(),
                "--disable-default-apps".into(),
                "--disable-extensions".into(),
                "--no-first-run".into(),
                "--password-store=basic".into(),
                "--hide-scrollbars".into(),
                "--force-device-scale-factor=1".into(),
                "--lang=en-US".into(),
                format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                format!("--user-data-dir={}", profile.join("profile").display()),
            ];
            let mut caps = serde_json::Map::new();
            caps.insert("browserName".into(), json!("chrome"));
            caps.insert(
                "goog:chromeOptions".into(),
                json!({ "binary": "/usr/bin/chromium", "args": args }),
            );
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let client = ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&webdriver)
                .await
                .expect("a WebDriver session in chromium");
            eprintln!(
                "console: chromium started in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            tokio::sync::Mutex::new(Browser {
                client,
                _driver: driver,
            })
        })
        .await
}

/// Runs a browser test: on the shared runtime, with the browser to itself.
pub fn in_browser<F, Fut>(test: F)
where
    F: FnOnce(Page) -> Fut,
    Fut: Future<Output = ()>,
{
    runtime().block_on(async {
        let browser = browser().await.lock().await;
        let page = Page {
            c: browser.client.clone(),
        };
        page.c.set_window_size(DESKTOP.0, DESKTOP.1).await.unwrap();
        test(page).await;
    });
}

/// The browser, with the few steps the tests take.
pub struct Page {
    c: Client,
}

impl Page {
    pub async fn open(&self, app: &TestApp, fragment: &str) {
        self.c
            .goto(&app.url(&format!("/admin/{fragment}")))
            .await
            .unwrap();
    }

    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.c
            .wait()
            .at_most(WAIT)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let input = self.find(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    pub async fn click(&self, css: &str) {
        self.find(css).await.click().await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn script(&self, js: &str, args: Vec<Value>) -> Value {
        self.c.execute(js, args).await.unwrap()
    }

    /// Polls `js` (a function body returning a boolean) until it is true.
    pub async fn until(&self, what: &str, js: &str, args: Vec<Value>) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.script(js, args.clone()).await == json!(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn until_text(&self, css: &str, needle: &str) {
        self.until(
            &format!("{css} to show {needle:?}"),
            "const el = document.querySelector(arguments[0]); \
             return !!el && el.textContent.includes(arguments[1]);",
            vec![json!(css), json!(needle)],
        )
        .await;
    }

    /// The rows of a list (keys, projects, admin log entries), without the
    /// one that says the list is empty.
    pub async fn rows(&self, table: &str) -> usize {
        self.script(
            "return document.querySelectorAll(arguments[0] + ' tbody tr:not(:has(> td.empty))').length;",
            vec![json!(table)],
        )
        .await
        .as_u64()
        .unwrap() as usize
    }

    /// Whether an element matches `css` now (no waiting).
    pub async fn has(&self, css: &str) -> bool {
        self.script(
            "return document.querySelector(arguments[0]) !== null;",
            vec![json!(css)],
        )
        .await
            == json!(true)
    }

    /// Whether `needle` is anywhere in the document: markup, text, or the
    /// value of any form field.
    pub async fn contains(&self, needle: &str) -> bool {
        self.script(
            "const n = arguments[0]; \
             const values = [...document.querySelectorAll('input, textarea, select')].map(e => e.value); \
             return document.documentElement.outerHTML.includes(n) \
                 || document.body.innerText.includes(n) \
                 || values.some(v => v.includes(n));",
            vec![json!(needle)],
        )
        .await
            == json!(true)
    }

    /// Signs in with the admin token, as `root`.
    pub async fn sign_in(&self, app: &TestApp) {
        self.sign_in_with(app, ADMIN_TOKEN).await;
    }

    /// Signs in with `token` and waits for the caller's projects.
    pub async fn sign_in_with(&self, app: &TestApp, token: &str) {
        self.open(app, "").await;
        self.fill("#token", token).await;
        self.click("#signin-submit").await;
        self.until_text("#project-summary", "project").await;
    }

    /// Clicks the link `css` (a download) and returns the name and the
    /// text of the file Chromium saves, in a directory of its own.
    pub async fn download(&self, css: &str) -> (String, String) {
        let dir = std::env::temp_dir().join(random_id("keyward-console-download-"));
        std::fs::create_dir_all(&dir).unwrap();
        let params = json!({ "behavior": "allow", "downloadPath": dir.to_str().unwrap() });
        let cmd = Cdp {
            cmd: "Browser.setDownloadBehavior",
            params: params.clone(),
        };
        if self.c.issue_cmd(cmd).await.is_err() {
            self.cdp("Page.setDownloadBehavior", params).await;
        }
        self.click(css).await;
        let deadline = Instant::now() + WAIT;
        loop {
            // Chromium writes `NAME.crdownload`, then renames it `NAME`.
            let done = std::fs::read_dir(&dir)
                .unwrap()
                .filter_map(|entry| entry.ok())
                .map(|entry| entry.path())
                .find(|path| !path.extension().is_some_and(|ext| ext == "crdownload"));
            if let Some(path) = done {
                let text = std::fs::read_to_string(&path).unwrap();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let _ = std::fs::remove_dir_all(&dir);
                return (name, text);
            }
            assert!(Instant::now() < deadline, "no download from {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A Chrome DevTools command, through chromedriver.
    async fn cdp(&self, cmd: &'static str, params: Value) -> Value {
        self.c
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    /// Saves the page at desktop and at phone width (emulated, as a phone's
    /// viewport), whole (`full`) or as much as fits the screen (while a
    /// dialog is open).
    pub async fn shot(&self, name: &str, full: bool) {
        use base64::Engine as _;
        use fantoccini::actions::{InputSource, MouseActions, PointerAction};
        // Park the pointer in a corner: no hover effect in the pictures.
        let park = MouseActions::new("mouse".into()).then(PointerAction::MoveTo {
            duration: None,
            x: 0.0,
            y: 0.0,
        });
        self.c.perform_actions(park).await.unwrap();
        // And no passing notice over the page (shown again afterwards).
        self.script("document.getElementById('toast').hidden = true;", vec![])
            .await;
        let dir = repo().join("target/console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        for ((width, height), mobile, suffix) in
            [(DESKTOP, false, "desktop"), (PHONE, true, "phone")]
        {
            let metrics = json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile });
            self.cdp("Emulation.setDeviceMetricsOverride", metrics)
                .await;
            // Let layout settle at the new size.
            self.script(
                "return await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))));",
                vec![],
            )
            .await;
            let shot = self
                .cdp(
                    "Page.captureScreenshot",
                    json!({ "format": "png", "captureBeyondViewport": full }),
                )
                .await;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().expect("screenshot data"))
                .unwrap();
            let path: PathBuf = dir.join(format!("{name}-{suffix}.png"));
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(&png))
                .unwrap();
        }
        self.cdp("Emulation.clearDeviceMetricsOverride", json!({}))
            .await;
        self.script("document.getElementById('toast').hidden = false;", vec![])
            .await;
    }
}

/// `POST /session/{id}/goog/cdp/execute`: chromedriver's door to the
/// DevTools protocol, for device emulation and full-page screenshots.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &reqwest::Url,
        session: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (axum::http::Method::POST, Some(body.to_string()))
    }
}
