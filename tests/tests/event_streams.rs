//! Event streams end to end (`GET /v1/events`, `GET /v1/workflows/{id}/events`, the
//! long-poll `history?after=&wait=`), on real processes:
//!
//! - a subscriber of `/v1/events` sees every event of 1,000 concurrent orders exactly once,
//!   in order per run, as their histories hold them (live, and again from the store);
//! - resuming after a client disconnect and across an engine kill -9 loses and repeats
//!   nothing (the client resumes by itself with `Last-Event-ID`);
//! - a stalled subscriber (it reads nothing) does not hold the engine back: commits grow far
//!   past the stream's capacity while it is connected, and it then catches up from the store
//!   and gets everything (counted in `/v1/stats`, never timed);
//! - the subscriber limit's edge (503 one past it), the run stream and the long poll.

use serde_json::Value;
use shop_client::events::{EventStream, EventsQuery};
use shop_tests::{order_body, Api, Engine, EngineOptions, Stack};
use shop_types::api::{CommittedEventView, WorkflowStatus};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

/// Longest wait for one message on a stream before the test fails (not a timing assertion:
/// it only keeps a broken stream from hanging the suite).
const MESSAGE_DEADLINE: Duration = Duration::from_secs(120);
/// Orders placed at once.
const CONCURRENCY: usize = 32;
/// The engine's stream capacity in commits (`core::stream::EVENT_STREAM_CAPACITY`).
const EVENT_STREAM_CAPACITY: u64 = 1_024;
/// Events committed while a subscriber stalls: at a few hundred bytes each, many times what
/// a loopback socket's buffers hold (4 MiB at most here), so its follower must lag.
const STALLED_EVENTS: u64 = 60_000;
/// How long one test may take to place its orders, restarts included.
const PLACEMENT_DEADLINE: Duration = Duration::from_secs(300);

/// Places `count` orders `<prefix>-<n>` (a tenth of them declined), retrying each with the
/// same id until the engine acknowledges it (so a restart in between loses none); returns
/// their ids.
async fn place_orders(api: &Api, prefix: &str, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count).map(|n| format!("{prefix}-{n:04}")).collect();
    let mut tasks = JoinSet::new();
    for chunk in ids.chunks(count.div_ceil(CONCURRENCY).max(1)) {
        let (api, chunk) = (api.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for (n, id) in chunk.iter().enumerate() {
                let method = if n % 10 == 3 { "DECLINED" } else { "CREDIT_CARD" };
                let body = order_body(Some(id), &[(1 + (n as i64 % 5), 1)], method);
                let deadline = Instant::now() + PLACEMENT_DEADLINE;
                loop {
                    match api.place_order(&body).await {
                        Ok(reply) if reply.is_success() => break,
                        Ok(reply) if reply.status == 503 => {}
                        Ok(reply) => panic!("{id}: {} {}", reply.status, reply.text),
                        Err(_) => {}
                    }
                    assert!(Instant::now() < deadline, "{id} was not acknowledged");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a placement task");
    }
    ids
}

/// Waits until every run in `ids` is terminal.
async fn wait_all(api: &Api, ids: &[String]) {
    for id in ids {
        api.wait_workflow(id).await;
    }
}

/// The next `/v1/events` message's data and cursor.
async fn next_event(stream: &mut EventStream) -> (CommittedEventView, String) {
    let message = tokio::time::timeout(MESSAGE_DEADLINE, stream.next())
        .await
        .expect("a message within the deadline")
        .expect("the stream goes on");
    let event = message.committed_event().expect("its data parses");
    assert_eq!(message.event, event.kind, "the SSE event name is the kind");
    (event, message.id.expect("every message has an id"))
}

/// Reads `stream` into `seen` until the run of every id in `ids` has sent its terminal event.
async fn read_until_terminal(stream: &mut EventStream, ids: &[String], seen: &mut Vec<CommittedEventView>) {
    let mut open: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let terminal = |e: &CommittedEventView| e.status.is_terminal() && e.kind.starts_with("Workflow");
    for event in seen.iter().filter(|e| terminal(e)) {
        open.remove(event.workflow_id.as_str());
    }
    while !open.is_empty() {
        let (event, _) = next_event(stream).await;
        if terminal(&event) {
            open.remove(event.workflow_id.as_str());
        }
        seen.push(event);
    }
}

/// Every event of `seen` is numbered one after the other from 1, each run's events are
/// its history's, once each and in order, and nothing else is there.
async fn assert_exactly_the_histories(api: &Api, ids: &[String], seen: &[CommittedEventView]) {
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=seen.len() as u64).collect::<Vec<_>>(), "positions from 1, each once, in order");
    let mut by_run: BTreeMap<&str, Vec<&CommittedEventView>> = BTreeMap::new();
    for event in seen {
        by_run.entry(event.workflow_id.as_str()).or_default().push(event);
    }
    assert_eq!(by_run.keys().copied().collect::<BTreeSet<_>>(), ids.iter().map(String::as_str).collect());
    for id in ids {
        let history = api.history(id).await;
        let expected: Vec<(u64, &str)> = history.iter().map(|e| (e.seq, e.event.name())).collect();
        let got: Vec<(u64, &str)> = by_run[id.as_str()].iter().map(|e| (e.seq, e.kind.as_str())).collect();
        assert_eq!(got, expected, "run {id}: every event once, in order");
        assert!(by_run[id.as_str()].iter().all(|e| e.workflow_type.as_str() == "order"));
    }
}

async fn stats(api: &Api) -> Value {
    let reply = api.get("/v1/stats").await.expect("stats");
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.parse()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_sees_every_event_of_1000_concurrent_orders_exactly_once() {
    let stack = Stack::start().await;
    let mut live = stack
        .api
        .client()
        .events(&EventsQuery { after: Some("0".into()), ..EventsQuery::default() })
        .expect("a stream");
    let api = stack.api.clone();
    let placing = tokio::spawn(async move { place_orders(&api, "once", 1_000).await });
    let ids: Vec<String> = (0..1_000).map(|n| format!("once-{n:04}")).collect();
    let mut seen = Vec::new();
    read_until_terminal(&mut live, &ids, &mut seen).await;
    placing.await.expect("placed");
    wait_all(&stack.api, &ids).await;
    assert_exactly_the_histories(&stack.api, &ids, &seen).await;

    // The same events again, read from the store this time, and filtered.
    let mut again = stack
        .api
        .client()
        .events(&EventsQuery { after: Some("0".into()), ..EventsQuery::default() })
        .expect("a stream");
    let mut replayed = Vec::new();
    for _ in 0..seen.len() {
        replayed.push(next_event(&mut again).await.0);
    }
    assert_eq!(replayed, seen, "from the store as they were live");
    let query = EventsQuery {
        kind: Some("WorkflowCompensated".into()),
        status: Some("COMPENSATED".into()),
        workflow_type: Some("order".into()),
        after: Some("0".into()),
    };
    let mut compensated = stack.api.client().events(&query).expect("a stream");
    let expected: Vec<&CommittedEventView> = seen.iter().filter(|e| e.kind == "WorkflowCompensated").collect();
    assert!(expected.len() >= 100, "a tenth of the orders were declined (more ran out of stock)");
    for want in expected {
        assert_eq!(&next_event(&mut compensated).await.0, want);
    }
    let counted = stats(&stack.api).await;
    assert!(counted["stream"]["eventsSent"].as_u64().expect("a count") >= 2 * seen.len() as u64);
}

#[tokio::test(flavor = "multi_thread")]
async fn resuming_after_a_disconnect_and_a_kill_9_loses_and_repeats_nothing() {
    let mut stack = Stack::start().await;
    let first = place_orders(&stack.api, "a", 100).await;
    wait_all(&stack.api, &first).await;
    let mut stream = stack
        .api
        .client()
        .events(&EventsQuery { after: Some("0".into()), ..EventsQuery::default() })
        .expect("a stream");
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for _ in 0..700 {
        let (event, id) = next_event(&mut stream).await;
        seen.push(event);
        cursor = id;
    }
    drop(stream);

    // More commits while nobody listens; then resume from the cursor.
    let second = place_orders(&stack.api, "b", 100).await;
    wait_all(&stack.api, &second).await;
    let mut stream =
        stack.api.client().events(&EventsQuery { after: Some(cursor), ..EventsQuery::default() }).expect("a stream");
    let mut all: Vec<String> = first.iter().chain(&second).cloned().collect();
    read_until_terminal(&mut stream, &all, &mut seen).await;

    // An engine killed with orders in flight: the stream resumes by itself once it is back.
    let api = stack.api.clone();
    let placing = tokio::spawn(async move { place_orders(&api, "c", 200).await });
    let third: Vec<String> = (0..200).map(|n| format!("c-{n:04}")).collect();
    while seen.iter().filter(|e| e.workflow_id.as_str().starts_with("c-")).count() < 300 {
        seen.push(next_event(&mut stream).await.0);
    }
    stack.engine.kill9();
    stack.engine.restart().await;
    placing.await.expect("placed across the restart");
    all.extend(third);
    read_until_terminal(&mut stream, &all, &mut seen).await;
    wait_all(&stack.api, &all).await;
    assert!(stream.reconnects() >= 1, "the stream was cut by the kill");
    assert_exactly_the_histories(&stack.api, &all, &seen).await;
}

/// Opens `/v1/events?after=0` on a socket with a small receive buffer and reads nothing.
async fn stalled_subscriber(engine: &str) -> tokio::net::TcpStream {
    let addr: std::net::SocketAddr = engine.trim_start_matches("http://").parse().expect("host:port");
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket.set_recv_buffer_size(4096).expect("a small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connects");
    let request = format!("GET /v1/events?after=0 HTTP/1.0\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("sends");
    stream
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_subscriber_does_not_hold_the_engine_back_and_then_catches_up() {
    let stack = Stack::start().await;
    let mut stalled = stalled_subscriber(&stack.engine.url()).await;
    // Subscribed: it counts as a subscriber once its request is in.
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats(&stack.api).await["stream"]["subscribers"] != 1 {
        assert!(Instant::now() < deadline, "the stalled subscriber is counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Stock enough that every order runs its whole saga.
    for product in 1..=5 {
        stack.admin.set_stock(product, 1_000_000).await;
    }
    // The engine keeps committing while it reads nothing: far past the stream's capacity,
    // and past what the sockets' buffers can hold, so its follower must fall behind.
    let mut ids = Vec::new();
    let mut round = 0;
    loop {
        let placed = place_orders(&stack.api, &format!("s{round}"), 200).await;
        wait_all(&stack.api, &placed).await;
        ids.extend(placed);
        round += 1;
        let now = stats(&stack.api).await;
        assert_eq!(now["stream"]["subscribers"], 1, "still connected");
        let (commits, events) = (now["commits"].as_u64().expect("commits"), now["events"].as_u64().expect("events"));
        // Twice the stream's capacity is past it. (How many commits an order makes falls
        // as the engine groups more per turn: with its write-ahead log 200 orders make about
        // 40, so a bound of four times took more than the rounds allowed.)
        if commits > 2 * EVENT_STREAM_CAPACITY && events > STALLED_EVENTS {
            break;
        }
        assert!(round < 100, "commits grow with orders: {now}");
    }
    let total = stats(&stack.api).await["events"].as_u64().expect("events");
    // Now it reads: everything, once and in order, from the store where the stream moved on.
    let mut positions = Vec::new();
    let mut pending = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while positions.len() < total as usize {
        let read = tokio::time::timeout(MESSAGE_DEADLINE, stalled.read(&mut buffer))
            .await
            .expect("bytes within the deadline")
            .expect("reads");
        assert!(read > 0, "the stream stays open");
        pending.extend_from_slice(&buffer[..read]);
        while let Some(at) = pending.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = pending.drain(..at + 2).collect();
            for line in String::from_utf8_lossy(&block).lines() {
                if let Some(data) = line.strip_prefix("data: ") {
                    let event: CommittedEventView = serde_json::from_str(data).expect("an event");
                    positions.push(event.position);
                }
            }
        }
    }
    assert_eq!(positions, (1..=total).collect::<Vec<_>>(), "every event once, in order");
    let after = stats(&stack.api).await;
    assert!(after["stream"]["catchUps"].as_u64().expect("a count") >= 1, "it lagged and read the store: {after}");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stream_past_the_limit_is_refused_with_503() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = vec!["--max-stream-subscribers".into(), "2".into()];
    let engine = Engine::start(dir.path(), EngineOptions { args, ..EngineOptions::default() }).await;
    let api = Api::new(&engine.url());
    let http = reqwest::Client::new();
    let open = |path: &str| http.get(format!("{}{path}", engine.url())).send();
    let first = open("/v1/events").await.expect("answers");
    let second = open("/v1/events?after=0").await.expect("answers");
    assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
    assert!(first.headers()["content-type"].to_str().expect("ascii").starts_with("text/event-stream"));
    let third = api.get("/v1/events").await.expect("answers");
    third.assert_error(503, "OVERLOADED");
    assert_eq!(stats(&api).await["stream"]["subscribers"], 2);
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open("/v1/events").await.expect("answers");
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 503, "refused only while full");
        assert!(Instant::now() < deadline, "a closed stream gives its place back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_stream_and_the_long_poll_follow_one_run_to_its_end() {
    // No worker: the order waits for its first task until the test terminates it.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::start(dir.path(), EngineOptions::default()).await;
    let api = Api::new(&engine.url());
    let id = api.place_order_ok(&order_body(Some("poll-1"), &[(1, 1)], "CREDIT_CARD")).await;
    let history = api.history(&id).await;
    let last = history.last().expect("events").seq;

    api.get("/v1/workflows/nobody/events").await.expect("answers").assert_error(404, "NOT_FOUND");
    for (path, status, code) in [
        ("/v1/events?after=zz", 400, "BAD_CURSOR"),
        ("/v1/events?after=0:999999", 400, "BAD_CURSOR"),
        ("/v1/events?status=DONE", 422, "INVALID_VALUE"),
        ("/v1/events?kind=Step%20Completed", 422, "INVALID_VALUE"),
        ("/v1/events?colour=red", 400, "BAD_QUERY"),
    ] {
        api.get(path).await.expect("answers").assert_error(status, code);
    }
    api.get(&format!("/v1/workflows/{id}/history?after=0&wait=2m"))
        .await
        .expect("answers")
        .assert_error(422, "INVALID_VALUE");
    // Events after N exist: at once, only those.
    let reply = api.get(&format!("/v1/workflows/{id}/history?after=1&wait=30s")).await.expect("answers");
    let body: Value = reply.parse();
    assert_eq!(body["events"].as_array().expect("events").len() as u64, last - 1);
    // None after the last: the wait ends empty.
    let reply = api.get(&format!("/v1/workflows/{id}/history?after={last}&wait=1s")).await.expect("answers");
    assert_eq!(reply.parse::<Value>()["events"], serde_json::json!([]));

    // A run stream from event 2 on, and a long poll after the last: both see the end.
    let mut stream = api.client().workflow_events(&id, 1).expect("a stream");
    for seq in 2..=last {
        let message = stream.next().await.expect("a message");
        assert_eq!(message.id.as_deref(), Some(seq.to_string().as_str()));
        assert_eq!(message.history_event().expect("parses").seq, seq);
    }
    let poll = {
        let api = api.clone();
        let path = format!("/v1/workflows/{id}/history?after={last}&wait=60s");
        tokio::spawn(async move { api.get(&path).await.expect("answers") })
    };
    let terminated = api.post_json(&format!("/v1/workflows/{id}/terminate"), &serde_json::json!({})).await;
    assert_eq!(terminated.expect("answers").status, 202);
    let ended: Value = poll.await.expect("answered").parse();
    let events = ended["events"].as_array().expect("events");
    assert!(!events.is_empty() && ended.to_string().contains("terminated by the API"), "{ended}");
    // The stream gives the same events, then `end`.
    let mut last_seq = last;
    let end = loop {
        let message = stream.next().await.expect("a message");
        if message.event == "end" {
            break message;
        }
        last_seq = message.history_event().expect("parses").seq;
        assert_eq!(message.id.as_deref(), Some(last_seq.to_string().as_str()));
    };
    assert!(last_seq > last, "the terminal event came live");
    assert_eq!(end.end().expect("parses").status, WorkflowStatus::Terminated);
    // Resumed with Last-Event-ID after the terminal event: only `end` is left.
    let reply = reqwest::Client::new()
        .get(format!("{}/v1/workflows/{id}/events", engine.url()))
        .header("Last-Event-ID", last_seq.to_string())
        .send()
        .await
        .expect("answers");
    let text = reply.text().await.expect("the stream ends after `end`");
    assert!(text.starts_with("event: end\n"), "{text}");
}
