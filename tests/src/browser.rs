//! A real browser for the console's tests: Debian's headless Chromium driven over WebDriver
//! (`chromedriver` on a free loopback port, started here) with `fantoccini`.
//!
//! [`Browser::start`] answers `None` (after printing a loud `SKIPPED:` line) when Chromium or
//! its driver is not installed, unless `SHOP_REQUIRE_BROWSER=1`, which makes that a failure
//! (CI installs both). Every wait is a bounded poll for a condition on the page; nothing here
//! sleeps to let something happen. Screenshots go to `<target>/test-artifacts/console/`.
//!
//! The browser must never outlive the test: [`Browser::close`] ends the WebDriver session
//! (and with it Chromium), and dropping a `Browser` kills chromedriver's process group, which
//! Chromium runs in, so a panicking test leaves nothing behind.

use crate::process::{binary_dir, free_addr, Proc};
use fantoccini::{Client, ClientBuilder, Locator};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Set to `1` to fail, not skip, when Chromium or chromedriver is missing.
pub const REQUIRE_BROWSER_ENV: &str = "SHOP_REQUIRE_BROWSER";
/// How long chromedriver may take to answer its status after it starts.
const DRIVER_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a page may take to show what a test waits for (pushes, fetches, a saga's steps).
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two looks at the page while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Chromium's flags: headless, no sandbox (root in a container), and nothing that phones home.
const CHROMIUM_FLAGS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
];

/// A headless Chromium session and the chromedriver that runs it.
pub struct Browser {
    client: Client,
    driver: Proc,
    /// Chromium's fresh profile; removed after the browser is gone.
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a Chromium session, or `None` (after a loud `SKIPPED:` line)
    /// when either is missing and `SHOP_REQUIRE_BROWSER` is not `1`. `logs` holds the
    /// driver's log.
    pub async fn start(logs: &Path) -> Option<Browser> {
        let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER].into_iter().filter(|p| !Path::new(p).is_file()).collect();
        if !missing.is_empty() {
            let what = missing.join(" and ");
            assert!(
                std::env::var(REQUIRE_BROWSER_ENV).as_deref() != Ok("1"),
                "{what} missing and {REQUIRE_BROWSER_ENV}=1: install chromium chromium-driver"
            );
            eprintln!(
                "\n**********\nSKIPPED: {what} not installed; the console's browser tests did not run\n**********\n"
            );
            return None;
        }
        let port = free_addr().port();
        let mut command = Command::new(CHROMEDRIVER);
        command.arg(format!("--port={port}"));
        let driver = Proc::spawn("chromedriver", command, &logs.join("chromedriver.log"));
        let url = format!("http://127.0.0.1:{port}");
        wait_for_driver(&url).await;
        let profile = tempfile::tempdir().expect("a profile dir for Chromium");
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": CHROMIUM, "args": args }));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&url)
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session from chromedriver at {url}: {e}"));
        Some(Browser { client, driver, _profile: profile })
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The page's visible text.
    pub async fn text(&self) -> String {
        let body = self.client.find(Locator::Css("body")).await.expect("a page has a body");
        body.text().await.unwrap_or_default()
    }

    /// The text of the first element matching `css`, or `None` when there is none.
    pub async fn text_of(&self, css: &str) -> Option<String> {
        let element = self.client.find(Locator::Css(css)).await.ok()?;
        element.text().await.ok()
    }

    /// Waits until `check` holds for the page's text; panics with the page's text otherwise.
    pub async fn wait_for_text(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        loop {
            let text = self.text().await;
            if check(&text) {
                return text;
            }
            assert!(tokio::time::Instant::now() < deadline, "the page never showed {what}; it shows:\n{text}");
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the element matching `css` exists and its text satisfies `check`.
    pub async fn wait_for(&self, css: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        loop {
            if let Some(text) = self.text_of(css).await.filter(|t| check(t)) {
                return text;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{css} never showed what was expected; the page shows:\n{}", self.text().await);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Clicks the element matching `css`. A live page may swap the element for a fresh copy
    /// between finding and clicking it: the click is tried again until [`PAGE_DEADLINE`].
    pub async fn click(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
        loop {
            let clicked = match self.client.find(Locator::Css(css)).await {
                Ok(element) => element.click().await,
                Err(error) => Err(error),
            };
            match clicked {
                Ok(()) => return,
                Err(error) if tokio::time::Instant::now() >= deadline => panic!("click {css}: {error}"),
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
    }

    /// Types `text` into the field matching `css`.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("find {css}: {e}"));
        element.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Runs `script` in the page and returns its value.
    pub async fn execute(&self, script: &str) -> serde_json::Value {
        self.client.execute(script, Vec::new()).await.unwrap_or_else(|e| panic!("run a script: {e}"))
    }

    /// Saves a screenshot of the page as `<target>/test-artifacts/console/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let dir = artifacts_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Ends the WebDriver session (Chromium quits), then chromedriver (dropping `self`).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium runs in chromedriver's process group (the harness gives each child its
        // own): end the whole group by its id, so a panicking test leaves no browser behind.
        let group = format!("-{}", self.driver.pid());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
    }
}

/// Where the console tests' screenshots go: `test-artifacts/console/` in the cargo target dir.
pub fn artifacts_dir() -> PathBuf {
    let profile_dir = binary_dir();
    let target = profile_dir.parent().map_or(profile_dir.clone(), Path::to_path_buf);
    target.join("test-artifacts").join("console")
}

async fn wait_for_driver(url: &str) {
    let deadline = tokio::time::Instant::now() + DRIVER_START_DEADLINE;
    let status = format!("{url}/status");
    loop {
        if reqwest::get(&status).await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "chromedriver did not answer {status} in time");
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
