//! A real headless browser for tests: Debian's chromium driven through chromedriver over the
//! W3C WebDriver protocol (plain JSON over HTTP, spoken here with reqwest). The test spawns
//! its own chromedriver on a free loopback port and kills it when the [`Browser`] drops.
//!
//! Missing tools fail the test, they never skip it: `/usr/bin/chromium` and
//! `/usr/bin/chromedriver` (Debian packages `chromium` and `chromium-driver`), or the paths in
//! `HOKUSAI_TEST_CHROMIUM` and `HOKUSAI_TEST_CHROMEDRIVER`.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long [`Browser::wait_for_text`] waits.
pub const WAIT: Duration = Duration::from_secs(20);

/// A chromedriver process and one headless chromium session on it.
pub struct Browser {
    /// chromedriver, leader of its own process group (chromium runs in that group too).
    driver: Child,
    client: reqwest::Client,
    /// Prefix of WebDriver commands: the driver's URL, then the session's once created.
    session: String,
    /// chromium's throw-away profile.
    profile: PathBuf,
}

/// A WebDriver element reference.
#[derive(Debug, Clone)]
pub struct Element(String);

fn tool(variable: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(variable).unwrap_or_else(|_| default.to_owned()));
    assert!(
        path.is_file(),
        "{} is missing: install Debian's `chromium` and `chromium-driver` \
         (scripts/test does), or set {variable}",
        path.display()
    );
    path
}

impl Browser {
    /// Spawns chromedriver and opens a headless chromium session (1280×1000 window).
    pub async fn start() -> Browser {
        let chromium = tool("HOKUSAI_TEST_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("HOKUSAI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", chromedriver.display()));
        let mut browser = Browser {
            driver,
            client: reqwest::Client::new(),
            session: format!("http://127.0.0.1:{port}"),
            profile: std::env::temp_dir()
                .join(format!("hokusai-chromium-{}", uuid::Uuid::new_v4())),
        };
        browser.wait_ready().await;
        let profile = browser.profile.clone();
        let created = browser
            .call(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                                 format!("--user-data-dir={}", profile.display())],
                    },
                }}})),
            )
            .await;
        let id = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id: {created}"))
            .to_owned();
        browser.session = format!("{}/session/{id}", browser.session);
        browser
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.driver.try_wait().expect("chromedriver status") {
                panic!("chromedriver exited at start-up: {status}");
            }
            let ready = match self
                .client
                .get(format!("{}/status", self.session))
                .send()
                .await
            {
                Ok(response) => response
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "chromedriver not ready in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One WebDriver command on `base + path`; panics with the driver's error when it fails.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.session);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status();
        let answer: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: not JSON: {e}"));
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer["value"].clone()
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    /// Every element matching the CSS `selector`.
    pub async fn find_all(&self, selector: &str) -> Vec<Element> {
        let found = self
            .call(
                reqwest::Method::POST,
                "/elements",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        found
            .as_array()
            .expect("a list of elements")
            .iter()
            .map(|e| {
                let id = e[ELEMENT_KEY].as_str();
                Element(
                    id.unwrap_or_else(|| panic!("not an element: {e}"))
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The first element matching `selector`, waiting up to [`WAIT`] for it to exist.
    pub async fn find(&self, selector: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Some(element) = self.find_all(selector).await.into_iter().next() {
                return element;
            }
            assert!(start.elapsed() < WAIT, "no element matches `{selector}`");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The rendered text of `element`.
    pub async fn text(&self, element: &Element) -> String {
        let value = self
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", element.0),
                None,
            )
            .await;
        value.as_str().expect("text").to_owned()
    }

    /// Waits up to [`WAIT`] until the text of the first element matching `selector`
    /// satisfies `done`; returns it (panics with the last text seen otherwise).
    pub async fn wait_for_text(&self, selector: &str, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some(element) = self.find_all(selector).await.into_iter().next() {
                // The element may be replaced between the lookup and the read: retry then.
                let url = format!("{}/element/{}/text", self.session, element.0);
                let read = self.client.get(&url).send().await.expect("text request");
                if read.status().is_success() {
                    let value: Value = read.json().await.expect("json");
                    let text = value["value"].as_str().unwrap_or_default().to_owned();
                    if done(&text) {
                        return text;
                    }
                    last = Some(text);
                }
            }
            assert!(
                start.elapsed() < WAIT,
                "`{selector}` never had the expected text; last seen: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `text` into `element`.
    pub async fn type_into(&self, element: &Element, text: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", element.0),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Clicks `element`.
    pub async fn click(&self, element: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.0),
            Some(json!({})),
        )
        .await;
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves a PNG screenshot of the viewport to `path` (creating its folder).
    pub async fn screenshot(&self, path: &Path) {
        let encoded = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().expect("base64 screenshot"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("artifact folder");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Ends the session (the driver is killed on drop either way).
    pub async fn quit(self) {
        let _ = self.client.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group this test started: chromedriver and the chromium it launched, even
        // when the test panicked before `quit`.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Where tests put artifacts: `$CARGO_TARGET_DIR/test-artifacts` (else `target/`).
pub fn artifact_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("test-artifacts")
}
