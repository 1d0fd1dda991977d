//! The console's sessions over plain HTTP (no browser), against a real engine with
//! authentication on: sign-in, what a session cookie may and may not authenticate, the CSRF
//! token on actions, and a revoked token ending its sessions.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::json;
use shop_tests::{order_body, Api, Engine, EngineOptions};

struct Console {
    http: reqwest::Client,
    base: String,
}

impl Console {
    fn new(base: &str) -> Console {
        let http = reqwest::Client::builder().redirect(Policy::none()).build().expect("a client");
        Console { http, base: base.trim_end_matches('/').to_owned() }
    }

    /// Signs in with `token`; returns the status and the session cookie (`name=value`), if any.
    async fn sign_in(&self, token: &str) -> (u16, Option<String>) {
        let body = form_pair("token", token);
        let reply = self
            .http
            .post(format!("{}/console/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("POST /console/login");
        let cookie = reply
            .headers()
            .get(SET_COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::to_owned);
        (reply.status().as_u16(), cookie)
    }

    async fn get(&self, path: &str, cookie: &str) -> (u16, String) {
        let reply = self.http.get(format!("{}{path}", self.base)).header(COOKIE, cookie).send().await.expect("a GET");
        let status = reply.status().as_u16();
        (status, reply.text().await.unwrap_or_default())
    }

    async fn post_form(&self, path: &str, cookie: &str, body: String) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .header(COOKIE, cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("a POST")
    }
}

/// `name=value`, form-encoded (the token alphabet and the CSRF token need no more than this).
fn form_pair(name: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    format!("{name}={encoded}")
}

/// The CSRF token a console page carries in its forms.
fn csrf_of(page: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("the page has a CSRF field") + marker.len();
    page[start..].split('"').next().expect("a closing quote").to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_reads_the_api_but_acts_only_through_the_console_with_its_csrf_token() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let token_file = dir.path().join("admin.token");
    let args = vec!["--admin-token-file".to_owned(), token_file.display().to_string()];
    let engine = Engine::start(dir.path(), EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&token_file).expect("the admin token").trim().to_owned();
    let api = Api::with_token(&engine.url(), &admin_token);
    let console = Console::new(&engine.url());

    // No session: pages redirect to the login page; a bad credential is refused there.
    let reply = console.http.get(format!("{}/console/runs", console.base)).send().await.expect("GET");
    assert_eq!(reply.status().as_u16(), 303);
    assert_eq!(reply.headers().get(LOCATION).and_then(|v| v.to_str().ok()), Some("/console/login"));
    let (status, cookie) = console.sign_in("shop_not-a-real-token").await;
    assert_eq!((status, cookie), (401, None), "an unknown token starts no session");

    // An admin token created through the API (so it can be revoked), then signed in with.
    let created = api.post_json("/v1/tokens", &json!({"name": "operator", "role": "admin"})).await.expect("POST");
    assert_eq!(created.status, 201, "{}", created.text);
    let created: serde_json::Value = created.parse();
    let operator = created["token"].as_str().expect("a secret").to_owned();
    let operator_id = created["id"].as_str().expect("an id").to_owned();
    let (status, cookie) = console.sign_in(&operator).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");

    // The cookie reads the API (GET), but never changes anything through it.
    let (status, _) = console.get("/v1/workflows", &cookie).await;
    assert_eq!(status, 200, "a session authenticates a GET of the API");
    // No worker serves the queues: the run stays in flight, so it can still be cancelled.
    let id = api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let reply = console.post_form(&format!("/v1/workflows/{id}/cancel"), &cookie, String::new()).await;
    assert_eq!(reply.status().as_u16(), 401, "a session never authenticates a state-changing API request");

    // A console action needs the session's CSRF token: 403 without it, done with it.
    let (status, page) = console.get(&format!("/console/runs/{id}"), &cookie).await;
    assert_eq!(status, 200);
    let reply = console.post_form(&format!("/console/runs/{id}/actions/cancel"), &cookie, "reason=x".into()).await;
    assert_eq!(reply.status().as_u16(), 403, "no CSRF token");
    let wrong = form_pair("csrf", "not-the-token");
    let reply = console.post_form(&format!("/console/runs/{id}/actions/cancel"), &cookie, wrong).await;
    assert_eq!(reply.status().as_u16(), 403, "a wrong CSRF token");
    assert!(
        !api.history(&id).await.iter().any(|e| e.event.name().starts_with("CancelRequested")),
        "refused actions changed nothing"
    );
    let body = format!("{}&reason=changed%20my%20mind", form_pair("csrf", &csrf_of(&page)));
    let reply = console.post_form(&format!("/console/runs/{id}/actions/cancel"), &cookie, body).await;
    assert_eq!(reply.status().as_u16(), 303, "the cancel is taken");
    let history = api.history(&id).await;
    let cancel = history.iter().find(|e| e.event.name() == "CancelRequestedBy").expect("CancelRequestedBy");
    assert_eq!(cancel.event.requested_by(), Some(format!("token:{operator_id}").as_str()), "who asked is recorded");

    // Revoking the token ends its session at the next request.
    let revoked = api.post_json(&format!("/v1/tokens/{operator_id}/revoke"), &json!({})).await.expect("revoke");
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let (status, _) = console.get("/v1/workflows", &cookie).await;
    assert_eq!(status, 401, "the revoked token's session no longer reads the API");
    let reply =
        console.http.get(format!("{}/console/runs", console.base)).header(COOKIE, &cookie).send().await.expect("GET");
    assert_eq!(reply.status().as_u16(), 303, "and its pages send it to the login page");
}

/// Signs in to a fresh engine started with `args` (authentication on); returns it, its
/// admin API client, the console and the session cookie.
async fn signed_in(dir: &std::path::Path, mut args: Vec<String>) -> (Engine, Api, Console, String) {
    let token_file = dir.join("admin.token");
    args.extend(["--admin-token-file".to_owned(), token_file.display().to_string()]);
    let engine = Engine::start(dir, EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&token_file).expect("the admin token").trim().to_owned();
    let api = Api::with_token(&engine.url(), &admin_token);
    let console = Console::new(&engine.url());
    let (status, cookie) = console.sign_in(&admin_token).await;
    assert_eq!(status, 303);
    (engine, api, console, cookie.expect("a session cookie"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shop_panel_says_plainly_when_no_worker_is_configured_or_one_is_down() {
    // No --worker-admin: the panel says how to get one.
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (_engine, api, console, cookie) = signed_in(dir.path(), Vec::new()).await;
    let id = api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let (status, panel) = console.get(&format!("/console/runs/{id}/shop"), &cookie).await;
    assert_eq!(status, 200, "{panel}");
    assert!(panel.contains("data-testid=\"shop-none\"") && panel.contains("--worker-admin"), "{panel}");

    // A worker admin API where nothing listens: each part of the panel says it cannot be read.
    let dead = shop_tests::process::free_addr();
    let dir = tempfile::tempdir().expect("a temporary dir");
    let args = vec!["--worker-admin".to_owned(), format!("http://{dead}")];
    let (_engine, api, console, cookie) = signed_in(dir.path(), args).await;
    let id = api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let (status, page) = console.get(&format!("/console/runs/{id}"), &cookie).await;
    assert_eq!(status, 200, "the run page never fails for the shop");
    assert!(page.contains("data-testid=\"shop\""), "the page has the panel's place");
    let (status, panel) = console.get(&format!("/console/runs/{id}/shop"), &cookie).await;
    assert_eq!(status, 200, "{panel}");
    assert_eq!(panel.matches("data-testid=\"shop-down\"").count(), 3, "stock, payments, notifications:\n{panel}");
    assert!(panel.contains(&dead.to_string()), "the panel names the worker: {panel}");
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_gauges_stay_when_a_queue_drains_and_the_overview_streams_ticks() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (engine, api, console, cookie) = signed_in(dir.path(), Vec::new()).await;
    // No worker serves the queues: the order's first task waits on `inventory`.
    let id = api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let stats: serde_json::Value = api.get("/v1/stats").await.expect("GET /v1/stats").parse();
    let gauge = &stats["queueGauges"]["inventory"];
    assert_eq!(gauge["ready"], json!(1), "{stats}");
    assert!(gauge["oldestScheduledMs"].is_u64(), "{stats}");
    let (status, page) = console.get("/console/queues", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("data-queue=\"inventory\""), "{page}");

    // Cancelled, the run leaves the queue: its gauge stays, at zero.
    let cancelled = api.post_json(&format!("/v1/workflows/{id}/terminate"), &json!({})).await.expect("POST");
    assert_eq!(cancelled.status, 202, "{}", cancelled.text);
    let stats: serde_json::Value = api.get("/v1/stats").await.expect("GET /v1/stats").parse();
    let gauge = &stats["queueGauges"]["inventory"];
    assert_eq!((gauge["ready"].clone(), gauge["oldestScheduledMs"].clone()), (json!(0), json!(null)), "{stats}");

    // The overview stream: a credential (here the session) is needed, then ticks come.
    let url = format!("{}/v1/overview/events", engine.url());
    let reply = console.http.get(&url).send().await.expect("GET");
    assert_eq!(reply.status().as_u16(), 401, "no credential, no stream");
    let mut reply = console.http.get(&url).header(COOKIE, &cookie).send().await.expect("GET");
    assert_eq!(reply.status().as_u16(), 200);
    let mut seen = String::new();
    while !seen.contains("\n\n") {
        let chunk = reply.chunk().await.expect("the stream").expect("a tick before the stream ends");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.starts_with("event: tick\ndata: {"), "{seen}");
    let data: serde_json::Value =
        serde_json::from_str(seen.lines().nth(1).and_then(|l| l.strip_prefix("data: ")).expect("data")).expect("JSON");
    assert_eq!(data["started"], json!(1), "{data}");
    assert_eq!(data["finished"], json!(1), "the terminated run ended: {data}");
    assert_eq!(data["backlog"]["inventory"], json!(0), "{data}");
}

/// The failures page's bulk retry starts a redrive job and leads to its page: the same form
/// sent twice is one job; a key past `MAX_IDEMPOTENCY_KEY_BYTES` is refused; an unknown job
/// is a 404 page; without a session the job page sends to the login page.
#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_retry_is_one_redrive_job_with_its_own_page() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let token_file = dir.path().join("admin.token");
    let args = vec!["--admin-token-file".to_owned(), token_file.display().to_string()];
    let engine = Engine::start(dir.path(), EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&token_file).expect("the admin token").trim().to_owned();
    let console = Console::new(&engine.url());
    let (status, cookie) = console.sign_in(&admin_token).await;
    assert_eq!(status, 303);
    let cookie = cookie.expect("a session cookie");

    // No failed run has this fingerprint: the confirm page offers nothing to retry.
    let (status, page) = console.get("/console/failures/retry?group=0000000000000000", &cookie).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Yes, retry 0 runs"), "{page}");
    let form =
        |key: &str| format!("{}&group=0000000000000000&{}", form_pair("csrf", &csrf_of(&page)), form_pair("key", key));
    let first = console.post_form("/console/failures/retry", &cookie, form("k1")).await;
    assert_eq!(first.status().as_u16(), 303);
    let location = first.headers().get(LOCATION).and_then(|v| v.to_str().ok()).expect("a location").to_owned();
    assert!(location.starts_with("/console/redrives/rd-"), "{location}");
    let again = console.post_form("/console/failures/retry", &cookie, form("k1")).await;
    let again = again.headers().get(LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(again.as_deref(), Some(location.as_str()), "the same form twice is one job");

    let (status, job) = console.get(&location, &cookie).await;
    assert_eq!(status, 200);
    assert!(job.contains("data-testid=\"redrive-job\"") && job.contains("0 resumed, 0 skipped, of 0 runs"), "{job}");
    let too_long = "k".repeat(129);
    let reply = console.post_form("/console/failures/retry", &cookie, form(&too_long)).await;
    assert_eq!(reply.status().as_u16(), 400, "a key past MAX_IDEMPOTENCY_KEY_BYTES");

    let (status, _) = console.get("/console/redrives/rd-none", &cookie).await;
    assert_eq!(status, 404);
    let reply = console.http.get(format!("{}{location}", console.base)).send().await.expect("GET");
    assert_eq!(reply.status().as_u16(), 303, "no session: the login page");
}
