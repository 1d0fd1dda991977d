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
