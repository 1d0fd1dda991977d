//! The streaming worker protocol (`GET /v1/tasks/stream`) at its edges, against a real engine
//! process with a raw WebSocket client: the upgrade needs a credential (401 before any
//! upgrade); a worker credential reaches only its queues; the first frame must be a hello; a
//! frame over the limit closes the stream (1009); the engine never sends a queue more tasks
//! than the credit given; a forged token's report gets the verdict `STALE_TASK`; past
//! `--max-task-streams` the upgrade is refused with 503 `OVERLOADED`. Then orders complete
//! with a worker on the stream (the default) and on `--protocol poll`.

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use shop_tests::process::secured_engine;
use shop_tests::{assert_invariants, order_body, Api, PlacedOrder, Stack, WorkerOptions, CONFIRMED};
use shop_types::api::{ActivityTask, TaskOutcome, TaskReport};
use shop_types::auth::CreatedToken;
use shop_types::limits::{MAX_STREAM_FRAME_BYTES, MAX_STREAM_QUEUES};
use shop_types::task_stream::{EngineFrame, QueueCredit, WorkerFrame};
use shop_types::JsonText;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const JWT_KEY: &str = "task-stream-test-key-0123456789abcdef0123";
/// How long the engine may take to send the next expected frame.
const FRAME_DEADLINE: Duration = Duration::from_secs(30);

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn stream_url(engine: &str) -> String {
    format!("{}/v1/tasks/stream", engine.replacen("http://", "ws://", 1))
}

/// Opens the stream, or returns the HTTP status and body it was refused with.
async fn connect(engine: &str, bearer: Option<&str>) -> Result<Socket, (u16, String)> {
    let mut request = stream_url(engine).into_client_request().expect("a WebSocket URL");
    if let Some(token) = bearer {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            Err((response.status().as_u16(), body))
        }
        Err(other) => panic!("the stream failed otherwise than with an HTTP refusal: {other}"),
    }
}

async fn send(socket: &mut Socket, frame: &WorkerFrame) {
    let text = serde_json::to_string(frame).expect("encodes");
    socket.send(Message::Text(text)).await.expect("the engine takes the frame");
}

fn hello(queues: &[(&str, u32)]) -> WorkerFrame {
    WorkerFrame::Hello {
        worker_id: "stream-test-1".parse().expect("a worker id"),
        queues: queues
            .iter()
            .map(|(queue, credit)| QueueCredit { queue: queue.parse().expect("a queue"), credit: *credit })
            .collect(),
    }
}

/// The next frame of the engine (pings skipped), or the close frame's code and reason.
async fn next(socket: &mut Socket) -> Result<EngineFrame, (u16, String)> {
    loop {
        let message = tokio::time::timeout(FRAME_DEADLINE, socket.next())
            .await
            .expect("the engine sends a frame in time")
            .expect("the stream is open")
            .expect("a readable frame");
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text).expect("an engine frame")),
            Message::Close(Some(frame)) => return Err((u16::from(frame.code), frame.reason.into_owned())),
            Message::Close(None) => return Err((0, String::new())),
            _ => {}
        }
    }
}

/// Expects the engine to end the stream: an `Error` frame with `code`, then a close frame
/// with `close` and the code in its JSON reason.
async fn assert_closed(socket: &mut Socket, code: &str, close: CloseCode) {
    match next(socket).await {
        Ok(EngineFrame::Error(detail)) => assert_eq!(detail.code, code, "{}", detail.message),
        other => panic!("expected an error frame {code}, got {other:?}"),
    }
    let (status, reason) = next(socket).await.expect_err("then a close frame");
    assert_eq!(status, u16::from(close));
    let reason: Value = serde_json::from_str(&reason).expect("a JSON reason");
    assert_eq!(reason["code"], code);
}

async fn create_token(admin: &Api, body: Value) -> String {
    let reply = admin.post_json("/v1/tokens", &body).await.expect("POST /v1/tokens");
    assert_eq!(reply.status, 201, "token created: {}", reply.text);
    reply.parse::<CreatedToken>().token
}

#[tokio::test]
async fn the_stream_refuses_what_the_http_protocol_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin_token) = secured_engine(dir.path(), JWT_KEY, &["--max-task-streams", "2"]).await;
    let admin = Api::with_token(&engine.url(), &admin_token);
    let payment_only = create_token(&admin, json!({"name": "pay", "role": "worker", "queues": ["payment"]})).await;
    let client = create_token(&admin, json!({"name": "front", "role": "client"})).await;

    // No credential, a bad one, or another role: refused before any upgrade.
    let (status, body) = connect(&engine.url(), None).await.expect_err("no credential");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("UNAUTHENTICATED"), "{body}");
    assert_eq!(connect(&engine.url(), Some("shop_made_up")).await.expect_err("a bad credential").0, 401);
    assert_eq!(connect(&engine.url(), Some(&client)).await.expect_err("a client credential").0, 403);

    // A worker credential for payment only may not serve inventory.
    let mut socket = connect(&engine.url(), Some(&payment_only)).await.expect("upgraded");
    send(&mut socket, &hello(&[("inventory", 4)])).await;
    assert_closed(&mut socket, "FORBIDDEN", CloseCode::Policy).await;

    // The first frame must be a hello.
    let mut socket = connect(&engine.url(), Some(&payment_only)).await.expect("upgraded");
    send(&mut socket, &WorkerFrame::Credit(QueueCredit { queue: "payment".parse().expect("a queue"), credit: 1 }))
        .await;
    assert_closed(&mut socket, "INVALID_VALUE", CloseCode::Policy).await;

    // Credit past the limit of one queue.
    let mut socket = connect(&engine.url(), Some(&payment_only)).await.expect("upgraded");
    send(&mut socket, &hello(&[("payment", shop_types::limits::MAX_STREAM_CREDIT + 1)])).await;
    assert_closed(&mut socket, "INVALID_VALUE", CloseCode::Policy).await;

    // A frame of exactly the limit is read (and refused as malformed); one byte more closes.
    let mut socket = connect(&engine.url(), Some(&payment_only)).await.expect("upgraded");
    socket.send(Message::Text(" ".repeat(MAX_STREAM_FRAME_BYTES))).await.expect("sent");
    assert_closed(&mut socket, "BAD_FRAME", CloseCode::Policy).await;
    // One byte more: the engine stops reading, says so (1009) and closes. It does not read
    // the rest of the frame, so the client may see the connection reset instead.
    let mut socket = connect(&engine.url(), Some(&payment_only)).await.expect("upgraded");
    if socket.send(Message::Text(" ".repeat(MAX_STREAM_FRAME_BYTES + 1))).await.is_ok() {
        let mut ended = false;
        while !ended {
            match tokio::time::timeout(FRAME_DEADLINE, socket.next()).await.expect("the engine ends the stream") {
                Some(Ok(Message::Text(text))) => {
                    let frame: EngineFrame = serde_json::from_str(&text).expect("an engine frame");
                    assert!(matches!(frame, EngineFrame::Error(ref e) if e.code == "FRAME_TOO_LARGE"), "{frame:?}");
                }
                Some(Ok(Message::Close(Some(frame)))) => {
                    assert_eq!(frame.code, CloseCode::Size);
                    ended = true;
                }
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                None | Some(Err(_)) => ended = true,
            }
        }
    }

    // A hello may name MAX_STREAM_QUEUES queues (an admin serves every queue), not one more.
    let queues: Vec<String> = (0..=MAX_STREAM_QUEUES).map(|n| format!("queue-{n}")).collect();
    let named = |count: usize| -> Vec<(&str, u32)> { queues[..count].iter().map(|q| (q.as_str(), 0)).collect() };
    let mut socket = connect(&engine.url(), Some(&admin_token)).await.expect("upgraded");
    send(&mut socket, &hello(&named(MAX_STREAM_QUEUES + 1))).await;
    assert_closed(&mut socket, "INVALID_VALUE", CloseCode::Policy).await;
    let mut socket = connect(&engine.url(), Some(&admin_token)).await.expect("upgraded");
    send(&mut socket, &hello(&named(MAX_STREAM_QUEUES))).await;
    send(&mut socket, &WorkerFrame::Heartbeat { id: 1, tokens: Vec::new() }).await;
    match next(&mut socket).await {
        Ok(EngineFrame::HeartbeatAck { id: 1, stale }) => assert!(stale.is_empty()),
        other => panic!("the stream serves {MAX_STREAM_QUEUES} queues: {other:?}"),
    }
    socket.close(None).await.expect("closed");
    drop(socket);

    // Two streams open (the cap): a third is refused before the upgrade.
    let mut first = reconnect(&engine.url(), &payment_only).await.expect("the first stream");
    send(&mut first, &hello(&[("payment", 1)])).await;
    let mut second = connect(&engine.url(), Some(&payment_only)).await.expect("the second stream");
    send(&mut second, &hello(&[("payment", 1)])).await;
    let (status, body) = connect(&engine.url(), Some(&payment_only)).await.expect_err("over the cap");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("OVERLOADED"), "{body}");
    // Once one closes, its slot is free again.
    first.close(None).await.expect("closed");
    drop(first);
    assert!(reconnect(&engine.url(), &payment_only).await.is_some(), "a closed stream gives its slot back");
}

/// A stream, once a slot is free: a stream the client closed frees its slot when the engine
/// has seen the close, a moment later.
async fn reconnect(engine: &str, token: &str) -> Option<Socket> {
    for _ in 0..100 {
        if let Ok(socket) = connect(engine, Some(token)).await {
            return Some(socket);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn the_engine_sends_no_more_tasks_than_the_credit_and_judges_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (engine, admin_token) = secured_engine(dir.path(), JWT_KEY, &[]).await;
    let admin = Api::with_token(&engine.url(), &admin_token);
    let worker = create_token(
        &admin,
        json!({"name": "w", "role": "worker", "queues": ["inventory", "payment", "notification"]}),
    )
    .await;
    // Five orders and no worker: five reservations wait on the inventory queue.
    for n in 0..5 {
        admin.place_order_ok(&order_body(Some(&format!("credit-{n}")), &[(1, 1)], "CREDIT_CARD")).await;
    }
    let mut socket = connect(&engine.url(), Some(&worker)).await.expect("upgraded");
    send(&mut socket, &hello(&[("inventory", 2), ("payment", 0)])).await;
    let mut tasks: Vec<ActivityTask> = Vec::new();
    while tasks.len() < 2 {
        match next(&mut socket).await.expect("a frame") {
            EngineFrame::Tasks { queue, tasks: more } => {
                assert_eq!(queue.as_str(), "inventory");
                tasks.extend(more);
            }
            other => panic!("expected tasks, got {other:?}"),
        }
    }
    assert_eq!(tasks.len(), 2, "exactly the credit given");

    // A report with a forged token is judged like one over HTTP; and no task came before
    // its verdict, as the credit is spent.
    let mut forged = tasks[0].token.clone();
    forged.mac = Some([0; shop_types::ids::TASK_TOKEN_MAC_LEN]);
    let report =
        TaskReport { token: forged, outcome: TaskOutcome::Completed { output: JsonText::null() }, traceparent: None };
    send(&mut socket, &WorkerFrame::Report { id: 7, reports: vec![report], credits: Vec::new() }).await;
    match next(&mut socket).await.expect("a frame") {
        EngineFrame::Reported { id, results } => {
            assert_eq!(id, 7);
            assert_eq!(results.len(), 1);
            assert_eq!(results[0].as_ref().map(|r| r.code.as_str()), Some("STALE_TASK"));
        }
        other => panic!("expected the verdict before any task (the credit is spent), got {other:?}"),
    }

    // More credit: the three left come, and no more than that.
    send(&mut socket, &WorkerFrame::Credit(QueueCredit { queue: "inventory".parse().expect("a queue"), credit: 10 }))
        .await;
    while tasks.len() < 5 {
        match next(&mut socket).await.expect("a frame") {
            EngineFrame::Tasks { tasks: more, .. } => tasks.extend(more),
            other => panic!("expected tasks, got {other:?}"),
        }
    }
    let mut ids: Vec<String> = tasks.iter().map(|t| t.workflow_id.to_string()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "five different runs: {ids:?}");

    // A genuine report is recorded: the run moves on to its payment step, whose task comes
    // with the credit returned on the payment queue in the same frame.
    let reserve = &tasks[0];
    let report = TaskReport {
        token: reserve.token.clone(),
        outcome: TaskOutcome::Completed { output: JsonText::from_value(&json!({"totalCents": 1999})) },
        traceparent: None,
    };
    let credits = vec![QueueCredit { queue: "payment".parse().expect("a queue"), credit: 1 }];
    send(&mut socket, &WorkerFrame::Report { id: 8, reports: vec![report], credits }).await;
    let mut verdict = None;
    let mut payment = None;
    while verdict.is_none() || payment.is_none() {
        match next(&mut socket).await.expect("a frame") {
            EngineFrame::Reported { id: 8, results } => verdict = Some(results),
            EngineFrame::Tasks { queue, tasks } if queue.as_str() == "payment" => payment = Some(tasks),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(verdict.map(|r| r.len()), Some(1));
    let payment = payment.expect("a payment task");
    assert_eq!(payment.len(), 1);
    assert_eq!(payment[0].workflow_id, reserve.workflow_id);
}

#[tokio::test]
async fn orders_complete_with_a_worker_on_either_protocol() {
    for protocol in ["stream", "poll"] {
        let stack = Stack::start_with(Default::default(), WorkerOptions::with_args(["--protocol", protocol])).await;
        stack.admin.set_stock(1, 1000).await;
        let initial = stack.admin.stock().await;
        let mut placed = Vec::new();
        for n in 0..20 {
            let order_id = format!("{protocol}-{n}");
            stack.api.place_order_ok(&order_body(Some(&order_id), &[(1, 1)], "CREDIT_CARD")).await;
            placed.push(PlacedOrder {
                order_id,
                items: vec![(1, 1)],
                payment_method: "CREDIT_CARD".to_owned(),
                expected_status: CONFIRMED,
            });
        }
        for order in &placed {
            let view = stack.api.wait_order(&order.order_id).await;
            assert_eq!(view.status, CONFIRMED, "{protocol}: {} {:?}", order.order_id, view.reason);
        }
        assert_invariants(&stack.api, &stack.admin, &initial, &placed).await;
    }
}

/// One echo step that runs longer than its heartbeat timeout: it completes on its first
/// attempt only if its heartbeats reach the engine (over the stream).
const HEARTBEAT_DEFINITION: &str = r#"
name = "beat_e2e"
version = 1

[[steps]]
name = "slow"
activity = "echo.run"
queue = "echo"
retry = { max_attempts = 1 }
timeouts = { start_to_close = "60s", heartbeat = "3s" }
"#;

#[tokio::test]
async fn heartbeats_over_the_stream_keep_a_long_attempt_alive() {
    let worker = WorkerOptions { activities: "echo".into(), ..WorkerOptions::with_args(["--latency", "7s"]) };
    let stack = Stack::start_with(Default::default(), worker).await;
    let reply = stack.api.register_definition(HEARTBEAT_DEFINITION).await;
    assert!(reply.is_success(), "registers: {} {:?}", reply.status, reply.body);
    let reply = stack.api.start_workflow("beat_e2e", Some("beat-1"), json!({})).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let view = stack.api.wait_workflow("beat-1").await;
    assert_eq!(view.status, shop_types::api::WorkflowStatus::Completed, "{view:?}");
    let names: Vec<&str> = stack.api.history("beat-1").await.iter().map(|e| e.event.name()).collect();
    assert_eq!(names.iter().filter(|n| **n == "StepStarted").count(), 1, "one attempt: {names:?}");
}
