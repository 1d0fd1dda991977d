//! Definitions end to end, against a real `shop-engine` (and an echo `shop-worker`):
//! checking a good file answers its resolved plan and registers nothing, and `shopctl
//! definition check` renders it; a bad file is 422 `INVALID_DEFINITION` naming its line;
//! registering v2 while v1 runs are open names them (an exact count and at most
//! `OPEN_RUNS_SAMPLE` ids), and they still finish on v1 while new runs start on v2.

use serde_json::json;
use shop_tests::process::{binary, run_to_end, Engine, EngineOptions, Worker, WorkerOptions};
use shop_tests::Api;
use shop_types::api::{DefinitionList, DefinitionPlan, RegisteredDefinition, WorkflowStatus, WorkflowView};
use shop_types::limits::OPEN_RUNS_SAMPLE;
use std::process::Command;
use std::time::Duration;

/// How long one `shopctl` command may take.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

fn echo_definition(version: u32) -> String {
    format!(
        r#"
name = "defs_echo"
version = {version}

[defaults.retry]
initial_interval = "100ms"
max_attempts = 3

[[steps]]
name = "first"
activity = "echo.run"
queue = "echo"
timeouts = {{ start_to_close = "5s" }}

[[steps]]
name = "second"
activity = "echo.run"
queue = "echo"
on_failure = "continue"

[[compensations]]
step = "first"
activity = "echo.run"
queue = "echo"

[[after_compensation]]
name = "tell"
activity = "echo.run"
queue = "echo"
"#
    )
}

/// Line 8 (a key the format does not have) is what makes it invalid.
const BAD_DEFINITION: &str =
    "name = \"defs_bad\"\nversion = 1\n\n[[steps]]\nname = \"only\"\nactivity = \"echo.run\"\nqueue = \"echo\"\nbogus = 1\n";

async fn check(api: &Api, toml: &str) -> shop_tests::Reply {
    api.post_raw("/v1/definitions/check", "application/toml", toml.as_bytes().to_vec(), &[])
        .await
        .expect("the engine answers POST /v1/definitions/check")
}

async fn registered_names(api: &Api) -> Vec<(String, u32)> {
    let list: DefinitionList = api.get("/v1/definitions").await.expect("lists").parse();
    list.definitions.into_iter().map(|d| (d.name, d.version)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_shows_the_plan_and_registers_nothing_and_a_bad_file_names_its_line() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());

    let source = echo_definition(1);
    let reply = check(&api, &source).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let plan: DefinitionPlan = reply.parse();
    assert_eq!((plan.name.as_str(), plan.version), ("defs_echo", 1));
    assert!(plan.content_hash.starts_with("sha256:") && plan.content_hash.len() == 7 + 64, "{}", plan.content_hash);
    let steps: Vec<&str> = plan.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["first", "second"]);
    assert_eq!(plan.steps[0].timeouts.start_to_close_ms, 5_000);
    assert_eq!(plan.steps[0].retry.max_attempts, 3, "the defaults are resolved into the step");
    assert_eq!(plan.steps[1].on_failure, "continue");
    assert_eq!(plan.compensation.len(), 1);
    assert_eq!(plan.compensation[0].undoes, "first");
    assert_eq!(plan.steps[0].compensated_by.as_deref(), Some(plan.compensation[0].step.name.as_str()));
    assert_eq!(plan.after_compensation.len(), 1);
    assert!(!registered_names(&api).await.iter().any(|(name, _)| name == "defs_echo"), "a check registers nothing");

    let reply = check(&api, BAD_DEFINITION).await;
    reply.assert_error(422, "INVALID_DEFINITION");
    assert!(reply.message().contains(":8"), "the error names the line: {}", reply.message());

    // The CLI renders the same plan, and its --json is the engine's answer.
    let file = dir.path().join("defs_echo.toml");
    std::fs::write(&file, &source).expect("write the definition");
    let shopctl = |args: &[&str]| {
        let mut command = Command::new(binary("shopctl"));
        command.env_remove("SHOP_ENGINE").env("NO_COLOR", "1").arg("--engine").arg(engine.url()).args(args);
        run_to_end(command, COMMAND_DEADLINE)
    };
    let file_arg = file.to_str().expect("a UTF-8 path");
    let shown = shopctl(&["definition", "check", file_arg]);
    assert!(shown.status.success(), "definition check failed: {}", shown.stderr);
    for expected in ["defs_echo v1 is valid", "first", "second", "continue", "compensation", "tell"] {
        assert!(shown.stdout.contains(expected), "{expected:?} in:\n{}", shown.stdout);
    }
    let shown = shopctl(&["--json", "definition", "check", file_arg]);
    assert!(shown.status.success(), "definition check --json failed: {}", shown.stderr);
    let plan_json: serde_json::Value = serde_json::from_str(&shown.stdout).expect("--json prints JSON");
    assert_eq!(plan_json["content_hash"], json!(plan.content_hash));
    // A declared circuit breaker is part of the plan.
    let breaker = dir.path().join("breaker.toml");
    std::fs::write(&breaker, shop_tests::variants::order_with_circuit(96)).expect("write the variant");
    let shown = shopctl(&["definition", "check", breaker.to_str().expect("a UTF-8 path")]);
    assert!(shown.status.success(), "definition check failed: {}", shown.stderr);
    assert!(shown.stdout.contains("circuit breakers:"), "breakers shown:\n{}", shown.stdout);
    assert!(shown.stdout.contains("payment.charge") && shown.stdout.contains("half-open"), "{}", shown.stdout);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, BAD_DEFINITION).expect("write the bad definition");
    let refused = shopctl(&["definition", "check", bad.to_str().expect("a UTF-8 path")]);
    assert!(!refused.status.success(), "a bad file fails the check");
    assert!(refused.stderr.contains(":8"), "the line is shown: {}", refused.stderr);
    assert!(!registered_names(&api).await.iter().any(|(name, _)| name == "defs_bad"));
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_v2_names_the_open_v1_runs_which_finish_on_v1() {
    let dir = tempfile::tempdir().expect("a temporary dir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());

    let reply = api.register_definition(&echo_definition(1)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let v1: RegisteredDefinition = reply.parse();
    assert!(v1.open_runs_of_older_versions.is_empty());

    // No worker serves `echo` yet, so these runs stay open. One more than the sample shows.
    let runs = OPEN_RUNS_SAMPLE + 1;
    let mut ids = Vec::new();
    for n in 0..runs {
        let id = format!("defs-v1-{n}");
        let reply = api.start_workflow("defs_echo", Some(&id), json!({ "n": n })).await;
        assert_eq!(reply.status, 202, "{}", reply.body);
        ids.push(id);
    }

    let reply = api.register_definition(&echo_definition(2)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    let v2: RegisteredDefinition = reply.parse();
    assert_eq!(v2.definition.version, 2);
    assert_eq!(v2.open_runs_of_older_versions.len(), 1, "{:?}", v2.open_runs_of_older_versions);
    let open = &v2.open_runs_of_older_versions[0];
    assert_eq!((open.version, open.count), (1, runs as u64));
    assert_eq!(open.sample.len(), OPEN_RUNS_SAMPLE, "the sample is bounded, the count exact");
    assert!(open.sample.iter().all(|id| ids.contains(&id.to_string())));

    // Both versions are listed, each with the hash of its own source.
    let list: DefinitionList = api.get("/v1/definitions").await.expect("lists").parse();
    let hashes: Vec<&str> =
        list.definitions.iter().filter(|d| d.name == "defs_echo").map(|d| d.content_hash.as_str()).collect();
    assert_eq!(hashes.len(), 2);
    assert_ne!(hashes[0], hashes[1]);
    assert_eq!(hashes[1], v2.definition.content_hash);

    let reply = api.start_workflow("defs_echo", Some("defs-v2-0"), json!({})).await;
    assert_eq!(reply.status, 202, "{}", reply.body);
    let started: WorkflowView = reply.parse();
    assert_eq!(started.definition_version, 2, "new runs start on the latest version");
    // Each run shows the hash of the source it was started on, recorded as event #2.
    let running = api.workflow("defs-v1-0").await;
    assert_eq!(running.definition_hash.as_deref(), Some(v1.definition.content_hash.as_str()));
    assert_eq!(api.workflow("defs-v2-0").await.definition_hash, Some(v2.definition.content_hash.clone()));
    let history: serde_json::Value = api.get("/v1/workflows/defs-v1-0/history").await.expect("reads").parse();
    assert_eq!(history["events"][1]["event"]["DefinitionPinned"]["content_hash"], json!(v1.definition.content_hash));
    let listed: serde_json::Value = api.get("/v1/workflows").await.expect("lists").parse();
    assert!(listed["workflows"][0].get("definition_hash").is_none(), "lists do not read histories: {listed}");

    let _worker = Worker::start(
        dir.path(),
        "echo-worker",
        &engine.url(),
        WorkerOptions { activities: "echo".to_owned(), ..WorkerOptions::default() },
    )
    .await;
    for id in &ids {
        let done = api.wait_workflow(id).await;
        assert_eq!(done.status, WorkflowStatus::Completed, "{id}: {done:?}");
        assert_eq!(done.definition_version, 1, "{id} stays pinned to v1");
        assert_eq!(done.definition_hash.as_deref(), Some(v1.definition.content_hash.as_str()), "{id}");
    }
    let done = api.wait_workflow("defs-v2-0").await;
    assert_eq!((done.status, done.definition_version), (WorkflowStatus::Completed, 2));
}
