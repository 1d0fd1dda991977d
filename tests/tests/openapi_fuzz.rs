//! The OpenAPI document (`GET /v1/openapi.json`) held to the running engine by schemathesis,
//! a property-based API fuzzer: every documented operation is called with generated input,
//! and the run fails on any 5xx, any status, content type or body the document does not
//! declare, and (on the authenticated engine) any route that answers without a credential.
//!
//! Two real engines: one `--open`, one with an admin token file. Each run is bounded by
//! [`MAX_EXAMPLES`] per operation, a fixed [`SEED`] and [`RUN_DEADLINE`].
//!
//! Every body in the document is the schema derived from its Rust type (`shop-types`'
//! `openapi` feature), so `response_schema_conformance` holds each answer to the exact shape
//! serde writes (required fields, enums, optional ones), beside `not_a_server_error`,
//! `status_code_conformance` and `content_type_conformance` (`--checks all`); on the
//! authenticated engine `negative_data_rejection` also holds the handlers to the request
//! schemas (a request that breaks one must be refused).
//!
//! Not checked: the SSE routes (their streams do not end, so a fuzzer cannot read an answer
//! to the end), and whether schema-valid bodies are accepted (`positive_data_acceptance`):
//! the handlers check more than a schema says (a workflow type must be registered, a task
//! token must carry the engine's MAC, a definition must be valid TOML), so a generated body
//! is mostly refused (4xx, which is checked for its documented status and shape).
//!
//! Without schemathesis on PATH the test prints `SKIPPED:` and passes, unless
//! `SHOP_REQUIRE_SCHEMATHESIS=1` (set by `.ci/run`, which installs it).

use shop_tests::process::{run_to_end, secured_engine};
use shop_tests::{Engine, EngineOptions};
use std::process::Command;
use std::time::Duration;

/// Generated cases per operation and phase: enough to reach every handler's refusals, few
/// enough that both runs fit in about a minute on two cores.
const MAX_EXAMPLES: u32 = 20;
/// Fixed, so a failure replays.
const SEED: u32 = 11;
/// One schemathesis run may take this long before the test fails.
const RUN_DEADLINE: Duration = Duration::from_secs(150);
/// Per request: a long poll or a waiting read past this is reported by schemathesis.
const REQUEST_TIMEOUT_SECS: u32 = 10;
/// Operations left out (regex on the path): the streams, which never end.
const EXCLUDED_PATHS: &str = "events$";
/// The authenticated engine's `--max-auth-failures`: 0, the throttle off. The fuzzer sends
/// hundreds of requests without a credential from one address, which the throttle would
/// answer with 429 `TOO_MANY_AUTH_FAILURES` (its own limit, tested in `hostile_clients.rs`),
/// hiding the 401 every route must give.
const FUZZ_MAX_AUTH_FAILURES: &str = "0";

fn schemathesis() -> Option<String> {
    let found = Command::new("schemathesis").arg("--version").output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&found.stdout).trim().to_owned())
}

/// Runs schemathesis against `base`, excluding `skip_checks`, with `headers`; panics with its
/// report when it finds anything.
fn fuzz(base: &str, skip_checks: &str, headers: &[String]) {
    // Its caches (schemathesis', hypothesis') go to a scratch dir, never the source tree.
    let scratch = tempfile::tempdir().expect("a scratch dir for schemathesis");
    let mut command = Command::new("schemathesis");
    command.current_dir(scratch.path());
    command
        .args(["run", &format!("{base}/v1/openapi.json"), "--checks", "all", "--exclude-checks", skip_checks])
        .args(["--max-examples", &MAX_EXAMPLES.to_string(), "--seed", &SEED.to_string()])
        .args(["--request-timeout", &REQUEST_TIMEOUT_SECS.to_string(), "--workers", "1"])
        .args(["--exclude-path-regex", EXCLUDED_PATHS, "--no-color", "--wait-for-schema", "10"])
        // No example database: it would write a cache into the source tree, and a fixed seed replays.
        .args(["--generation-database", "none"]);
    for header in headers {
        command.args(["--header", header]);
    }
    let done = run_to_end(command, RUN_DEADLINE);
    assert!(done.status.success(), "schemathesis found problems at {base}:\n{}\n{}", done.stdout, done.stderr);
    println!("{}", done.stdout.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_engine_keeps_its_openapi_contract_open_and_authenticated() {
    let Some(version) = schemathesis() else {
        assert!(
            std::env::var("SHOP_REQUIRE_SCHEMATHESIS").as_deref() != Ok("1"),
            "SHOP_REQUIRE_SCHEMATHESIS=1 but schemathesis is not on PATH"
        );
        eprintln!("SKIPPED: schemathesis is not on PATH; the OpenAPI fuzz test did not run");
        return;
    };
    eprintln!("fuzzing with {version}");

    // Open: no credential is asked, so the checks about credentials do not apply (nor does
    // `negative_data_rejection`: a request without the documented `Authorization` is, by
    // design, accepted there).
    let dir = tempfile::tempdir().expect("a temporary dir");
    let open = Engine::start(dir.path(), EngineOptions::default()).await;
    fuzz(&open.url(), "ignored_auth,missing_required_header,positive_data_acceptance,negative_data_rejection", &[]);

    // Authenticated as admin: every route must refuse a missing or bad credential, and every
    // request that breaks its schema (`negative_data_rejection`).
    let dir = tempfile::tempdir().expect("a temporary dir");
    let (secured, admin_token) = secured_engine(
        dir.path(),
        "openapi-fuzz-jwt-key-0123456789abcdef",
        &["--max-auth-failures", FUZZ_MAX_AUTH_FAILURES],
    )
    .await;
    fuzz(&secured.url(), "positive_data_acceptance", &[format!("Authorization: Bearer {admin_token}")]);
}
