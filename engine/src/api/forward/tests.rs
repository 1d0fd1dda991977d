//! Which requests are routed, and by which run (the HTTP side is exercised end to end by
//! `tests/tests/cluster.rs`, against real nodes).

use super::*;

fn held(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Held {
    let mut builder = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, _) = builder.body(Body::empty()).expect("a request").into_parts();
    Held { parts, body: Bytes::from(body.to_owned()) }
}

fn id(text: &str) -> WorkflowId {
    WorkflowId::parse(text).expect("valid")
}

#[test]
fn every_request_about_one_run_is_routed_and_plain_reads_are_not() {
    let post = Method::POST;
    let get = Method::GET;
    assert_eq!(key_of(&post, "/v1/workflows", false), Some(Key::StartBody));
    assert_eq!(key_of(&post, "/api/orders", false), Some(Key::OrderBody));
    for task in ["/v1/tasks/complete", "/v1/tasks/fail", "/v1/tasks/heartbeat"] {
        assert_eq!(key_of(&post, task, false), Some(Key::TokenBody), "{task}");
    }
    for action in ["cancel", "terminate", "resume"] {
        assert_eq!(key_of(&post, &format!("/v1/workflows/:id/{action}"), false), Some(Key::Path(3)));
    }
    assert_eq!(key_of(&post, "/v1/workflows/:id/signals/:name", false), Some(Key::Path(3)));
    assert_eq!(key_of(&post, "/api/orders/:id/cancel", false), Some(Key::Path(3)));
    assert_eq!(key_of(&post, "/v1/callbacks/:token", false), Some(Key::Callback));
    assert_eq!(key_of(&get, "/v1/workflows/:id/events", false), Some(Key::Stream(3)));
    for read in ["/v1/workflows/:id", "/v1/workflows/:id/history", "/api/orders/:id"] {
        assert_eq!(key_of(&get, read, true), Some(Key::Waiting(3)), "{read} waiting");
        assert_eq!(key_of(&get, read, false), None, "{read} without a wait is read from the shared store");
    }
    // Served by whichever node is asked: polls hand out that node's tasks, report batches are
    // split in their handler, lists and stats read the shared store.
    for other in ["/v1/tasks/poll", "/v1/tasks/report", "/v1/definitions"] {
        assert_eq!(key_of(&post, other, false), None, "{other}");
    }
    assert_eq!(key_of(&get, "/v1/workflows", true), None);
}

#[test]
fn the_run_comes_from_the_path_the_body_or_the_idempotency_key() {
    let path = held("POST", "/v1/workflows/order-7/cancel", &[], "");
    assert_eq!(run_of(Key::Path(3), &path), Some(id("order-7")));
    let encoded = held("GET", "/api/orders/a%3Ab?wait=1s", &[], "");
    assert_eq!(run_of(Key::Waiting(3), &encoded), Some(id("a:b")));
    let callback = held("POST", "/v1/callbacks/order-9~2~14~99~00ff", &[], "");
    assert_eq!(run_of(Key::Callback, &callback), Some(id("order-9")));
    let start = held("POST", "/v1/workflows", &[], r#"{"type":"order","id":"o-1","input":{}}"#);
    assert_eq!(run_of(Key::StartBody, &start), Some(id("o-1")));
    let unnamed = held("POST", "/v1/workflows", &[], r#"{"type":"order","input":{}}"#);
    assert_eq!(run_of(Key::StartBody, &unnamed), None, "the node draws an id of its own");
    let order = held("POST", "/api/orders", &[], r#"{"orderId":"o-2","orderItems":[]}"#);
    assert_eq!(run_of(Key::OrderBody, &order), Some(id("o-2")));
    let keyed = held("POST", "/api/orders", &[("idempotency-key", "o-3")], r#"{"orderItems":[]}"#);
    assert_eq!(run_of(Key::OrderBody, &keyed), Some(id("o-3")));
    let token = held("POST", "/v1/tasks/complete", &[], r#"{"token":"o-4~f1~2","output":null}"#);
    assert_eq!(run_of(Key::TokenBody, &token), Some(id("o-4")));
    // Anything malformed is left to the handler here, which answers it precisely.
    for (key, bad) in [
        (Key::StartBody, held("POST", "/v1/workflows", &[], "{not json")),
        (Key::StartBody, held("POST", "/v1/workflows", &[], r#"{"id":"bad id"}"#)),
        (Key::TokenBody, held("POST", "/v1/tasks/fail", &[], r#"{"token":"nope"}"#)),
        (Key::Path(3), held("POST", "/v1/workflows/%FF/cancel", &[], "")),
    ] {
        assert_eq!(run_of(key, &bad), None);
    }
}

#[test]
fn a_waiting_read_is_sent_on_with_the_wait_that_is_left() {
    let uri: Uri = "/v1/workflows/o-1/history?after=3&wait=30s".parse().expect("a uri");
    let query = query_pairs(&uri);
    assert_eq!(wait_of(&query), Some(Duration::from_secs(30)));
    assert_eq!(
        with_wait(&uri, &query, Some(Duration::from_millis(1234))),
        "/v1/workflows/o-1/history?after=3&wait=1234ms"
    );
    assert_eq!(with_wait(&uri, &query, None), "/v1/workflows/o-1/history?after=3");
    let only: Uri = "/api/orders/o-1?wait=5s".parse().expect("a uri");
    assert_eq!(with_wait(&only, &query_pairs(&only), None), "/api/orders/o-1");
    // A wait the handler would refuse is not taken for one: the handler answers 400/422.
    assert_eq!(wait_of(&query_pairs(&"/x?wait=soon".parse().expect("a uri"))), None);
    assert_eq!(wait_of(&query_pairs(&"/x?wait=3600s".parse().expect("a uri"))), None);
}

#[test]
fn a_single_node_draws_the_first_id_and_routes_everything_here() {
    let cluster = Cluster::single("n1".into(), "http://127.0.0.1:1".into());
    let drawn = local_id(&cluster);
    assert_eq!(cluster.route(&drawn), Route::Local);
}

#[test]
fn moved_and_unavailable_answers_are_503_marked_for_rerouting() {
    for error in [shard_moved(Some("n2")), shard_moved(None), shard_unavailable()] {
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(reroutable(&response));
        assert!(response.headers().contains_key(axum::http::header::RETRY_AFTER));
    }
    let overloaded = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "OVERLOADED", "busy").into_response();
    assert!(!reroutable(&overloaded), "only the shard's answers are routed again");
}
