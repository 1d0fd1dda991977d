//! The web console in a real browser: headless Chromium over WebDriver against a real engine
//! (with authentication on: an admin token file) and a real worker, as a person would use it.
//!
//! One stack and one browser walk the flows in order, each leaving a screenshot in
//! `<target>/test-artifacts/console/`:
//! 1. sign in with the admin token; an order placed through the API appears on the runs page
//!    and turns CONFIRMED without a reload (pushed over SSE);
//! 2. a declined order's run page shows its compensation path;
//! 3. a run whose refund keeps failing is parked; once the fault is fixed, Retry on its page
//!    (behind a confirm step) resumes it, it finishes, and its history says who retried it;
//! 4. the overview's counters of runs started and finished move while 50 orders are placed,
//!    without a reload (one tick a second over SSE);
//! 5. two runs parked by the same refund fault form one group on the failures page; once the
//!    fault is fixed, the group's bulk retry (behind a confirm step) starts a redrive job
//!    whose page follows it to its end (both resumed, started by the admin), they finish,
//!    and each history names the job;
//! 6. the queues page shows each queue's backlog and pollers; the definitions page lists the
//!    versions and a version's compensation plan;
//! 7. an order's run page shows the shop beside it (its payment and notification, read from
//!    the worker's admin API given with `--worker-admin`): the README's screenshot;
//! 8. a client token signs in, sees runs but no action buttons, and is refused an action
//!    (the confirm page and a CSRF-carrying POST alike) with the API's reason; it reads the
//!    failures page but is offered no bulk retry, and is refused one.
//!
//! Without Chromium or chromedriver the test prints `SKIPPED:` and passes, unless
//! `SHOP_REQUIRE_BROWSER=1`. Every wait is bounded; nothing asserts a timing.

use serde_json::json;
use shop_tests::browser::Browser;
use shop_tests::process::free_addr;
use shop_tests::variants::order_with_quick_refund;
use shop_tests::{order_body, Admin, Api, Engine, EngineOptions, Worker, WorkerOptions, CANCELLED, CONFIRMED};
use shop_types::order::FaultConfig;
use std::path::Path;

/// The order version registered for the parked runs: above every version in `workflows/`.
const QUICK_REFUND_VERSION: u32 = 99;
/// Refund failures injected to park a run: far more than any attempt budget.
const REFUND_FAILURES: u32 = 1_000;
/// The admin token file's subject, as the console and the history name it.
const ADMIN_SUBJECT: &str = "admin-file";
/// Orders placed while the overview watches.
const BURST_ORDERS: u64 = 50;

struct Setup {
    engine: Engine,
    _worker: Worker,
    api: Api,
    admin: Admin,
    admin_token: String,
}

async fn setup(dir: &Path) -> Setup {
    let token_file = dir.join("admin.token");
    // The worker's address is chosen first: the engine's console reads its admin API.
    let worker_listen = free_addr();
    let args = vec![
        "--admin-token-file".to_owned(),
        token_file.display().to_string(),
        "--worker-admin".to_owned(),
        format!("http://{worker_listen}"),
    ];
    let engine = Engine::start(dir, EngineOptions { open: false, args, ..EngineOptions::default() }).await;
    let admin_token = std::fs::read_to_string(&token_file).expect("the engine wrote its admin token").trim().to_owned();
    let worker_args = vec!["--token".to_owned(), admin_token.clone()];
    let options = WorkerOptions { args: worker_args, listen: Some(worker_listen), ..WorkerOptions::default() };
    let worker = Worker::start(dir, "worker", &engine.url(), options).await;
    let api = Api::with_token(&engine.url(), &admin_token);
    let admin = Admin::new(&worker.url());
    Setup { engine, _worker: worker, api, admin, admin_token }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_runs_live_and_acts_on_them_as_the_api_allows() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let Some(browser) = Browser::start(dir.path()).await else {
        return;
    };
    let stack = setup(dir.path()).await;
    let base = stack.engine.url();

    sign_in(&browser, &base, &stack.admin_token).await;
    a_new_order_appears_and_confirms_without_a_reload(&browser, &stack).await;
    a_declined_order_shows_its_compensation_path(&browser, &stack).await;
    a_parked_run_is_retried_from_its_page(&browser, &stack).await;
    the_overview_counts_a_burst_as_it_happens(&browser, &stack).await;
    a_group_of_parked_runs_is_retried_at_once(&browser, &stack).await;
    queues_and_definitions_are_shown(&browser, &stack).await;
    an_orders_run_page_shows_the_shop_beside_it(&browser, &stack).await;
    a_client_sees_runs_but_is_refused_actions(&browser, &stack).await;
    browser.close().await;
}

async fn sign_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(&format!("{base}/console/runs")).await;
    // No session: the console sends the browser to its login page.
    browser.wait_for("h1", |t| t == "Sign in").await;
    browser.fill("#token", token).await;
    browser.screenshot("login").await;
    browser.click("form[action='/console/login'] button[type=submit]").await;
    browser.wait_for("h1", |t| t == "Runs").await;
}

async fn a_new_order_appears_and_confirms_without_a_reload(browser: &Browser, stack: &Setup) {
    // The stream is open before the order exists, so its first event is pushed to the page.
    browser.wait_for("[data-testid=live-state]", |t| t.contains("live")).await;
    browser.execute("window.consoleTestMarker = 'same page';").await;
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 1)], "CREDIT_CARD")).await;
    let row = format!("tr[data-id='{id}']");
    browser.wait_for(&row, |t| t.contains(CONFIRMED)).await;
    let marker = browser.execute("return window.consoleTestMarker || null;").await;
    assert_eq!(marker, json!("same page"), "the row appeared and changed without a reload");
    browser.screenshot("runs_live").await;
}

async fn a_declined_order_shows_its_compensation_path(browser: &Browser, stack: &Setup) {
    let id = stack.api.place_order_ok(&order_body(None, &[(2, 1)], "DECLINED")).await;
    assert_eq!(stack.api.wait_order(&id).await.status, CANCELLED);
    // The runs page shows why it did not complete.
    browser.goto(&format!("{}/console/runs?q={id}", stack.engine.url())).await;
    browser.wait_for(&format!("tr[data-id='{id}'] td.reason"), |t| t.contains("PAYMENT_DECLINED")).await;
    browser.goto(&format!("{}/console/runs/{id}", stack.engine.url())).await;
    browser.wait_for("[data-testid=run-status]", |t| t.contains("COMPENSATED")).await;
    let undo = browser.wait_for("[data-testid=compensation-path]", |t| t.contains("Compensation path")).await;
    assert!(undo.contains("reserve_stock.compensation"), "the release is on the compensation path:\n{undo}");
    let forward = browser.text_of("[data-testid=forward-path]").await.unwrap_or_default();
    assert!(forward.contains("charge_payment") && forward.contains("PAYMENT_DECLINED"), "{forward}");
    browser.screenshot("run_compensated").await;
}

async fn set_refund_failures(admin: &Admin, failures: u32) {
    let mut faults: FaultConfig = admin.get("/faults").await.expect("GET /faults");
    faults.refund_fail_next = failures;
    admin.set_faults(&faults).await;
}

/// Places a declined order whose refund keeps failing: its run parks. Returns its id.
async fn parked_run(stack: &Setup) -> String {
    set_refund_failures(&stack.admin, REFUND_FAILURES).await;
    let id = stack.api.place_order_ok(&order_body(None, &[(3, 1)], "DECLINED")).await;
    assert_eq!(stack.api.wait_order(&id).await.status, "FAILED", "the run is parked");
    id
}

async fn a_parked_run_is_retried_from_its_page(browser: &Browser, stack: &Setup) {
    let reply = stack.api.register_definition(&order_with_quick_refund(QUICK_REFUND_VERSION)).await;
    assert_eq!(reply.status, 201, "the quick-refund variant is registered: {}", reply.text);
    let id = parked_run(stack).await;
    let page = format!("{}/console/runs/{id}", stack.engine.url());
    browser.goto(&page).await;
    browser.wait_for("[data-testid=run-status]", |t| t.contains("parked")).await;
    browser.screenshot("run_parked").await;

    // The operator fixes the cause, then retries from the page, through its confirm step.
    set_refund_failures(&stack.admin, 0).await;
    browser.click("[data-testid=action-retry]").await;
    browser.wait_for("[data-testid=confirm]", |t| t.contains(ADMIN_SUBJECT)).await;
    browser.screenshot("confirm_retry").await;
    browser.click("[data-testid=confirm-action]").await;
    browser.wait_for("[data-testid=run-status]", |t| t.contains("COMPENSATED")).await;
    browser.wait_for_text("who retried it", |t| t.contains(&format!("(by {ADMIN_SUBJECT})"))).await;
    browser.screenshot("run_retried").await;

    let history = stack.api.history(&id).await;
    let resumed = history.iter().find(|e| e.event.name() == "RunResumedBy").expect("the history holds RunResumedBy");
    assert_eq!(resumed.event.requested_by(), Some(ADMIN_SUBJECT));
    assert_eq!(stack.api.wait_order(&id).await.status, CANCELLED);
}

fn number(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

async fn the_overview_counts_a_burst_as_it_happens(browser: &Browser, stack: &Setup) {
    browser.goto(&format!("{}/console/overview", stack.engine.url())).await;
    browser.wait_for("[data-testid=live-state]", |t| t.contains("live")).await;
    // The first tick has come: the counters are the engine's, not the page's first render.
    browser.wait_for("#samples", |t| number(t).is_some()).await;
    browser.execute("window.consoleTestMarker = 'overview';").await;
    let started = number(&browser.text_of("[data-testid=started]").await.unwrap_or_default()).expect("a count");
    let finished = number(&browser.text_of("[data-testid=finished]").await.unwrap_or_default()).expect("a count");
    let mut ids = Vec::new();
    for n in 0..BURST_ORDERS {
        let product = 1 + i64::try_from(n % 3).expect("small");
        ids.push(stack.api.place_order_ok(&order_body(None, &[(product, 1)], "CREDIT_CARD")).await);
    }
    browser.wait_for("[data-testid=started]", |t| number(t).is_some_and(|n| n >= started + BURST_ORDERS)).await;
    for id in &ids {
        stack.api.wait_order(id).await;
    }
    browser.wait_for("[data-testid=finished]", |t| number(t).is_some_and(|n| n >= finished + BURST_ORDERS)).await;
    browser.wait_for("#samples", |t| number(t).is_some_and(|n| n > 0)).await;
    let marker = browser.execute("return window.consoleTestMarker || null;").await;
    assert_eq!(marker, json!("overview"), "the counters moved without a reload");
    let lines = browser.execute("return document.querySelectorAll('#rate-chart polyline').length;").await;
    assert_eq!(lines, json!(2), "the chart draws started and finished per second");
    browser.screenshot("overview").await;
}

async fn a_group_of_parked_runs_is_retried_at_once(browser: &Browser, stack: &Setup) {
    let first = parked_run(stack).await;
    let second = parked_run(stack).await;
    browser.goto(&format!("{}/console/failures", stack.engine.url())).await;
    let group = "tr[data-testid=failure-group]:has(a[data-testid=retry-group])";
    let row = browser.wait_for(group, |t| !t.is_empty()).await;
    let parked = browser.text_of(&format!("{group} td.parked")).await.unwrap_or_default();
    assert_eq!(
        number(&parked),
        Some(2),
        "both runs parked by the refund fault are one group:
{row}"
    );
    browser.screenshot("failures").await;

    set_refund_failures(&stack.admin, 0).await;
    browser.click(&format!("{group} [data-testid=retry-group]")).await;
    browser.wait_for("[data-testid=confirm]", |t| t.contains("2 parked") && t.contains(ADMIN_SUBJECT)).await;
    browser.click("[data-testid=confirm-action]").await;
    // The retry is a redrive job of the group; its page follows it to its end.
    browser.wait_for("[data-testid=redrive-job] h1", |t| t.ends_with(": completed")).await;
    let progress = browser.text_of("[data-testid=redrive-progress]").await.unwrap_or_default();
    assert_eq!(progress, "2 resumed, 0 skipped, of 2 runs");
    let by = browser.text_of("[data-testid=redrive-by]").await.unwrap_or_default();
    assert_eq!(by, ADMIN_SUBJECT, "the job records who started it");
    let job = browser.execute("return document.querySelector('[data-testid=redrive-job]').dataset.id;").await;
    let job = job.as_str().expect("the job's id").to_owned();
    browser.screenshot("failures_retried").await;
    for id in [&first, &second] {
        assert_eq!(stack.api.wait_order(id).await.status, CANCELLED, "{id} finished after the bulk retry");
        let history = stack.api.history(id).await;
        let resumed = history.iter().find(|e| e.event.name() == "RunResumedBy").expect("RunResumedBy");
        let expected = format!("redrive:{job}");
        assert_eq!(resumed.event.requested_by(), Some(expected.as_str()), "{id}: audited with the job that retried it");
    }
}

async fn queues_and_definitions_are_shown(browser: &Browser, stack: &Setup) {
    let base = stack.engine.url();
    browser.goto(&format!("{base}/console/queues")).await;
    // Drained queues keep their row (backlog 0), and the worker polls each of its queues.
    browser.wait_for("tr[data-queue=payment] td.backlog", |t| number(t).is_some()).await;
    browser.wait_for("tr[data-queue=payment] td.pollers", |t| number(t).is_some_and(|n| n >= 1)).await;
    browser.screenshot("queues").await;

    browser.goto(&format!("{base}/console/definitions")).await;
    browser
        .wait_for(&format!("tr[data-name=order][data-version='{QUICK_REFUND_VERSION}']"), |t| t.contains("sha256:"))
        .await;
    browser.click(&format!("tr[data-name=order][data-version='{QUICK_REFUND_VERSION}'] a")).await;
    let plan = browser.wait_for("[data-testid=compensation-plan]", |t| !t.is_empty()).await;
    assert!(
        plan.contains("reserve_stock"),
        "the compensation plan names what it undoes:
{plan}"
    );
    browser.screenshot("definition").await;
}

async fn an_orders_run_page_shows_the_shop_beside_it(browser: &Browser, stack: &Setup) {
    let id = stack.api.place_order_ok(&order_body(None, &[(1, 2)], "CREDIT_CARD")).await;
    assert_eq!(stack.api.wait_order(&id).await.status, CONFIRMED);
    browser.goto(&format!("{}/console/runs/{id}", stack.engine.url())).await;
    browser.wait_for("[data-testid=run-status]", |t| t.contains("COMPLETED")).await;
    let payments = browser.wait_for("[data-testid=shop-payments]", |t| t.contains("charge")).await;
    assert!(!payments.contains("refund"), "{payments}");
    browser.wait_for("[data-testid=shop-notifications]", |t| t.contains("ORDER_CONFIRMED")).await;
    browser.wait_for("[data-testid=shop-stock]", |t| !t.is_empty()).await;
    browser.screenshot("run_shop").await;
}

async fn a_client_sees_runs_but_is_refused_actions(browser: &Browser, stack: &Setup) {
    let created = stack.api.post_json("/v1/tokens", &json!({"name": "viewer", "role": "client"})).await.expect("POST");
    assert_eq!(created.status, 201, "{}", created.text);
    let created: serde_json::Value = created.parse();
    let client_token = created["token"].as_str().expect("the new token's secret").to_owned();
    let id = parked_run(stack).await;
    set_refund_failures(&stack.admin, 0).await;

    browser.click("form.logout button").await;
    browser.wait_for("h1", |t| t == "Sign in").await;
    sign_in(browser, &stack.engine.url(), &client_token).await;
    browser.wait_for("[data-testid=who]", |t| t.contains("client")).await;

    let page = format!("{}/console/runs/{id}", stack.engine.url());
    browser.goto(&page).await;
    browser.wait_for("[data-testid=run-status]", |t| t.contains("parked")).await;
    assert!(browser.text_of("[data-testid=actions]").await.is_none(), "a client is offered no action");

    // Asking anyway: the confirm page refuses with the API's reason.
    browser.goto(&format!("{page}/confirm/retry")).await;
    let refused = browser.wait_for("[data-testid=error]", |t| t.contains("403")).await;
    assert!(refused.contains("the role client cannot do this; it needs an admin credential"), "{refused}");
    browser.screenshot("client_refused").await;

    // And so does the action itself, even with the session's CSRF token; without it, too.
    let script = format!(
        "const csrf = document.querySelector('input[name=csrf]').value;
         const post = (body) => fetch('/console/runs/{id}/actions/retry', {{method: 'POST',
             headers: {{'content-type': 'application/x-www-form-urlencoded'}}, body}}).then(r => r.status);
         return Promise.all([post('csrf=' + encodeURIComponent(csrf)), post('reason=x')]);"
    );
    let statuses = browser.execute(&script).await;
    assert_eq!(statuses, json!([403, 403]), "a client's action is refused, with or without the CSRF token");
    let run = stack.api.workflow(&id).await;
    assert!(run.closed_at_ms.is_none(), "the refused retry changed nothing: still parked");

    // The failures page is a read page: a client sees the group, is offered no bulk retry,
    // and is refused one.
    browser.goto(&format!("{}/console/failures", stack.engine.url())).await;
    browser.wait_for("tr[data-testid=failure-group] td.parked", |t| number(t).is_some_and(|n| n >= 1)).await;
    assert!(browser.text_of("[data-testid=retry-group]").await.is_none(), "a client is offered no bulk retry");
    let script = "const csrf = document.querySelector('input[name=csrf]').value;
         return fetch('/console/failures/retry', {method: 'POST',
             headers: {'content-type': 'application/x-www-form-urlencoded'},
             body: 'csrf=' + encodeURIComponent(csrf) + '&group=x&key=y'}).then(r => r.status);";
    assert_eq!(browser.execute(script).await, json!(403), "a client's bulk retry is refused");
}
