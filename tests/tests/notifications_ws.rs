//! The customer's notifications over WebSocket, on real processes: an engine with tokens and
//! a JWT key, a worker polling with a worker token and serving the socket. Two customers
//! place orders at once (one through a JWT with a `sub`, one through a client token naming
//! her); each socket gets exactly its own notifications in `customerSeq` order; a reconnect
//! with `?after=` loses none and repeats none, also across a kill -9 of the worker; a socket
//! without a valid, unexpired credential is refused before the upgrade; and a JWT with a
//! `sub` may neither place nor read another customer's orders.

use futures_util::StreamExt as _;
use serde_json::{json, Value};
use shop_tests::{order_body, Api, Engine, Worker, WorkerOptions};
use shop_types::auth::CreatedToken;
use shop_types::notify::{NotificationMessage, NotificationTicket};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;

/// The HS256 key the engine accepts JWTs signed with.
const JWT_KEY: &str = "notify-test-key-0123456789abcdef0123456789";
/// How long a socket may take to deliver the next expected message (orders run whole sagas).
const MESSAGE_DEADLINE: Duration = Duration::from_secs(60);
const ORDERS_EACH: usize = 4;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Setup {
    engine: Engine,
    worker: Worker,
    /// An admin of the engine.
    admin: Api,
    /// A client token of a trusted shop backend (no customer of its own).
    backend: String,
    /// A client JWT whose `sub` is `ann`.
    ann_jwt: String,
}

fn jwt(claims: Value) -> String {
    let header = jsonwebtoken::Header::default();
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_KEY.as_bytes()))
        .expect("encode a JWT")
}

fn client_jwt(sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() + 3600;
    jwt(json!({"role": "client", "sub": sub, "exp": exp}))
}

async fn create_token(admin: &Api, body: Value) -> String {
    let reply = admin.post_json("/v1/tokens", &body).await.expect("POST /v1/tokens");
    assert_eq!(reply.status, 201, "token created: {}", reply.text);
    reply.parse::<CreatedToken>().token
}

async fn setup(dir: &Path) -> Setup {
    let (engine, admin_token) = shop_tests::process::secured_engine(dir, JWT_KEY, &[]).await;
    let admin = Api::with_token(&engine.url(), &admin_token);
    let worker_token = create_token(
        &admin,
        json!({"name": "worker", "role": "worker", "queues": ["inventory", "payment", "notification", "risk"]}),
    )
    .await;
    let backend = create_token(&admin, json!({"name": "shop-backend", "role": "client"})).await;
    let options = WorkerOptions {
        activities: "inventory,payment,notification,risk".to_owned(),
        env: vec![("SHOP_WORKER_TOKEN".to_owned(), worker_token)],
        ..WorkerOptions::default()
    };
    let worker = Worker::start(dir, "worker", &engine.url(), options).await;
    Setup { engine, worker, admin, backend, ann_jwt: client_jwt("ann") }
}

/// A ticket minted with `token` for the customer `body` names (or the token's own).
async fn ticket(engine: &str, token: &str, body: Value) -> NotificationTicket {
    let reply = Api::with_token(engine, token).post_json("/api/notifications/tickets", &body).await.expect("answers");
    assert_eq!(reply.status, 201, "a ticket: {}", reply.text);
    reply.parse()
}

fn ws_url(worker: &Worker, query: &str) -> String {
    format!("{}/api/notifications/ws?{query}", worker.url().replacen("http://", "ws://", 1))
}

/// Opens the socket, or returns the HTTP status it was refused with.
async fn connect(url: &str, bearer: Option<&str>) -> Result<Socket, u16> {
    let mut request = url.into_client_request().expect("a WebSocket URL");
    if let Some(token) = bearer {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("the worker's socket failed otherwise than with an HTTP refusal: {other}"),
    }
}

/// The next notification on `socket` (pings are answered by the client library as it reads).
async fn next(socket: &mut Socket) -> NotificationMessage {
    loop {
        let frame = tokio::time::timeout(MESSAGE_DEADLINE, socket.next())
            .await
            .expect("a notification within the deadline")
            .expect("the socket is open")
            .expect("a frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(&text).expect("a notification message"),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

async fn take(socket: &mut Socket, n: usize) -> Vec<NotificationMessage> {
    let mut messages = Vec::with_capacity(n);
    for _ in 0..n {
        messages.push(next(socket).await);
    }
    messages
}

fn seqs(messages: &[NotificationMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.customer_seq).collect()
}

fn order_ids(messages: &[NotificationMessage]) -> Vec<String> {
    let mut ids: Vec<String> = messages.iter().map(|m| m.order_id.clone()).collect();
    ids.sort();
    ids
}

/// Places an order through `api`; `customer` goes in the body when given.
async fn place(api: &Api, id: &str, customer: Option<&str>, payment_method: &str) -> String {
    let mut body = order_body(Some(id), &[(1, 1)], payment_method);
    if let Some(customer) = customer {
        body["customerId"] = json!(customer);
    }
    api.place_order_ok(&body).await
}

#[tokio::test]
async fn each_customer_gets_exactly_their_notifications_in_order_across_reconnects_and_a_worker_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = setup(dir.path()).await;
    let engine = s.engine.url();
    let ann = Api::with_token(&engine, &s.ann_jwt);
    let backend = Api::with_token(&engine, &s.backend);

    // Ann's browser gets a ticket with her JWT; the shop backend gets Bob's for him.
    let ann_ticket = ticket(&engine, &s.ann_jwt, json!({})).await;
    assert_eq!(ann_ticket.customer_id.as_str(), "ann");
    let bob_ticket = ticket(&engine, &s.backend, json!({"customerId": "bob"})).await;
    let mut ann_socket =
        connect(&ws_url(&s.worker, &format!("ticket={}", ann_ticket.ticket)), None).await.expect("opens");
    let mut bob_socket =
        connect(&ws_url(&s.worker, &format!("ticket={}", bob_ticket.ticket)), None).await.expect("opens");

    // Both place orders at once; some are declined, so both kinds of notification come.
    let method = |n: usize| if n.is_multiple_of(2) { "CREDIT_CARD" } else { "DECLINED" };
    let ann_orders = (0..ORDERS_EACH).map(|n| {
        let ann = ann.clone();
        async move { place(&ann, &format!("ann-{n}"), None, method(n)).await }
    });
    let bob_orders = (0..ORDERS_EACH).map(|n| {
        let backend = backend.clone();
        async move { place(&backend, &format!("bob-{n}"), Some("bob"), method(n)).await }
    });
    let (mut ann_ids, mut bob_ids) =
        tokio::join!(futures_util::future::join_all(ann_orders), futures_util::future::join_all(bob_orders));
    ann_ids.sort();
    bob_ids.sort();
    assert_eq!(ann.order("ann-0").await.customer_id.map(|c| c.to_string()).as_deref(), Some("ann"));

    let ann_seen = take(&mut ann_socket, ORDERS_EACH).await;
    let bob_seen = take(&mut bob_socket, ORDERS_EACH).await;
    let in_order: Vec<u64> = (1..=ORDERS_EACH as u64).collect();
    assert_eq!(seqs(&ann_seen), in_order);
    assert_eq!(seqs(&bob_seen), in_order);
    assert_eq!(order_ids(&ann_seen), ann_ids, "Ann sees exactly her orders");
    assert_eq!(order_ids(&bob_seen), bob_ids, "Bob sees exactly his");
    drop(ann_socket);

    // A reconnect after the second: the third and fourth, then the next new one, nothing twice.
    // (A JWT with a sub may also connect directly, as non-browser clients do.)
    let mut again = connect(&ws_url(&s.worker, "after=2"), Some(&s.ann_jwt)).await.expect("opens");
    assert_eq!(take(&mut again, 2).await, ann_seen[2..].to_vec());
    place(&ann, "ann-live", None, "CREDIT_CARD").await;
    let live = next(&mut again).await;
    assert_eq!((live.customer_seq, live.order_id.as_str()), (5, "ann-live"));

    // kill -9 the worker: orders placed meanwhile are notified once it is back, and a
    // reconnect after the last message seen loses none of them.
    s.worker.kill9();
    place(&ann, "ann-down-1", None, "CREDIT_CARD").await;
    place(&ann, "ann-down-2", None, "DECLINED").await;
    s.worker.restart().await;
    let ticket_after = ticket(&engine, &s.ann_jwt, json!({"customerId": "ann"})).await;
    let url = ws_url(&s.worker, &format!("after=5&ticket={}", ticket_after.ticket));
    let mut after_kill = connect(&url, None).await.expect("opens");
    let resumed = take(&mut after_kill, 2).await;
    assert_eq!(seqs(&resumed), vec![6, 7]);
    assert_eq!(order_ids(&resumed), vec!["ann-down-1".to_owned(), "ann-down-2".to_owned()]);

    // From the start: every one once, in order; and the outbox lists them with their numbers.
    let url = ws_url(&s.worker, &format!("ticket={}", ticket_after.ticket));
    let mut replay = connect(&url, None).await.expect("opens");
    assert_eq!(seqs(&take(&mut replay, 7).await), (1..=7).collect::<Vec<u64>>());
    let outbox: Vec<Value> = shop_tests::Admin::new(&s.worker.url()).get("/notifications").await.expect("the outbox");
    let anns: Vec<u64> =
        outbox.iter().filter(|e| e["customerId"] == "ann").filter_map(|e| e["customerSeq"].as_u64()).collect();
    assert_eq!(anns, (1..=7).collect::<Vec<u64>>());
    drop(s.admin);
}

#[tokio::test]
async fn a_socket_without_a_valid_credential_is_refused_before_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    let engine = s.engine.url();
    assert_eq!(connect(&ws_url(&s.worker, "after=0"), None).await.err(), Some(401), "no credential");
    assert_eq!(connect(&ws_url(&s.worker, "ticket=nt1.ann.99999999999999.00"), None).await.err(), Some(401));
    assert_eq!(connect(&ws_url(&s.worker, ""), Some("shop_made_up")).await.err(), Some(401), "an unknown token");
    let foreign = jwt(json!({"role": "client", "sub": "ann", "exp": 4_000_000_000u64}));
    assert_eq!(connect(&ws_url(&s.worker, ""), Some(&foreign)).await.err(), Some(401), "a JWT beyond its lifetime");
    // A valid credential that speaks for no customer must use a ticket.
    assert_eq!(connect(&ws_url(&s.worker, ""), Some(&s.backend)).await.err(), Some(403));
    assert_eq!(connect(&ws_url(&s.worker, "after=x"), Some(&s.ann_jwt)).await.err(), Some(400));

    // Tickets: a JWT may not mint one for someone else, a backend must name the customer.
    let ann = Api::with_token(&engine, &s.ann_jwt);
    ann.post_json("/api/notifications/tickets", &json!({"customerId": "bob"}))
        .await
        .expect("answers")
        .assert_error(403, "FORBIDDEN");
    Api::with_token(&engine, &s.backend)
        .post_json("/api/notifications/tickets", &json!({}))
        .await
        .expect("answers")
        .assert_error(422, "INVALID_VALUE");

    // A ticket opens the socket until it expires, and no longer.
    let minted = ticket(&engine, &s.ann_jwt, json!({})).await;
    let url = ws_url(&s.worker, &format!("ticket={}", minted.ticket));
    drop(connect(&url, None).await.expect("a fresh ticket opens"));
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
    tokio::time::sleep(Duration::from_millis(minted.expires_at_ms.saturating_sub(now_ms) + 1_000)).await;
    assert_eq!(connect(&url, None).await.err(), Some(401), "an expired ticket");
}

#[tokio::test]
async fn a_customer_may_neither_place_nor_read_another_customers_orders_nor_other_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = setup(dir.path()).await;
    let engine = s.engine.url();
    let ann = Api::with_token(&engine, &s.ann_jwt);
    let mut for_bob = order_body(Some("sneaky"), &[(1, 1)], "CREDIT_CARD");
    for_bob["customerId"] = json!("bob");
    ann.place_order(&for_bob).await.expect("answers").assert_error(403, "FORBIDDEN");
    let bobs = place(&Api::with_token(&engine, &s.backend), "bob-1", Some("bob"), "CREDIT_CARD").await;
    let anns = place(&ann, "ann-1", Some("ann"), "CREDIT_CARD").await;
    ann.get(&format!("/api/orders/{bobs}")).await.expect("answers").assert_error(404, "NOT_FOUND");
    let listed: Value = ann.get("/api/orders").await.expect("answers").parse();
    let ids: Vec<&str> =
        listed["orders"].as_array().expect("orders").iter().filter_map(|o| o["orderId"].as_str()).collect();
    assert_eq!(ids, vec![anns.as_str()]);
    // Nor through the generic API, which serves operators and backends, not customers.
    for path in [format!("/v1/workflows/{bobs}"), format!("/v1/workflows/{anns}/history"), "/v1/workflows".into()] {
        ann.get(&path).await.expect("answers").assert_error(403, "FORBIDDEN");
    }
    // The backend, a client without a customer, sees both.
    let all: Value = Api::with_token(&engine, &s.backend).get("/api/orders").await.expect("answers").parse();
    assert_eq!(all["orders"].as_array().map(Vec::len), Some(2));
}
