//! The OpenAPI 3 document of the HTTP API, served at [`OPENAPI_PATH`].
//!
//! It owns one table, [`operations`]: every route of [`super::app`] with the role it needs,
//! its parameters, its body, its answers and the error statuses its handlers and the layers
//! around them (`edge`, `auth`) can give. Bodies are named by their Rust types (`shop-types`,
//! whose `openapi` feature derives `utoipa::ToSchema` for them), so every request and answer
//! schema in the document is the shape serde reads and writes: required fields, enums,
//! optional ones. The document is built from that table once per process. A unit test holds the table to the router (no route missing, none invented), and
//! the end-to-end fuzz test (`tests/tests/openapi_fuzz.rs`) holds the running engine to the
//! document (no 5xx, every answer's status, content type and body as documented).
//!
//! The document is public (served beside `/healthz`): it describes shapes, never data, and
//! a client needs it before it holds a credential. It must never say a route is open that
//! the router puts behind authentication.

use super::auth::Access;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use shop_types::api::{
    CallbackRequest, CompleteRequest, DefinitionList, DefinitionPlan, ErrorBody, FailRequest, Health, HeartbeatRequest,
    HistoryResponse, PollRequest, PollResponse, ReasonRequest, RegisteredDefinition, ReportBatchRequest,
    ReportBatchResponse, SignalReply, StartWorkflowRequest, TaskAck, WorkflowList, WorkflowStatus, WorkflowView,
};
use shop_types::auth::{CreateTokenRequest, CreatedToken, TokenList, TokenView};
use shop_types::cluster::{ClusterStatus, NodeList};
use shop_types::limits::{
    MAX_LIST_LIMIT, MAX_STREAM_CREDIT, MAX_STREAM_FRAME_BYTES, MAX_STREAM_QUEUES, MAX_TASKS_PER_POLL, MAX_WAIT_MS,
};
use shop_types::notify::{NotificationTicket, TicketRequest, Verified, VerifyRequest};
use shop_types::order::{OrderList, OrderView, PlaceOrderRequest};
use shop_types::redrive::{ParkedGroups, RedriveJob, RedriveRequest};
use shop_types::stats::StatsView;
use shop_types::task_stream::{EngineFrame, WorkerFrame};
use shop_types::JsonText;
use std::sync::OnceLock;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// What every authenticated route can answer whatever it does: a malformed request (400), no
/// or a bad credential (401), a role that does not cover it (403), a body, URI or head over
/// the edge's limits (413, 414, 431), a value out of range (422), a rate limit (429) and an
/// engine that cannot take it now (503).
const AUTHENTICATED_ERRORS: &[u16] = &[400, 401, 403, 413, 414, 422, 429, 431, 503];

/// What a public route can answer whatever it does: the edge's limits and an engine that
/// cannot take it now.
const PUBLIC_ERRORS: &[u16] = &[400, 413, 414, 431, 503];

/// One route and method.
pub(crate) struct Operation {
    pub(crate) method: &'static str,
    /// In OpenAPI's form (`{id}`), not axum's (`:id`).
    pub(crate) path: &'static str,
    /// `None`: public (no credential).
    access: Option<Access>,
    summary: &'static str,
    params: Vec<Value>,
    body: Body,
    /// Success statuses and what each carries.
    ok: Vec<(u16, Reply)>,
    /// Error statuses beyond the common ones of its access.
    errors: &'static [u16],
}

enum Body {
    None,
    Json(Shape),
    /// A workflow definition in TOML (`application/toml`, or `text/plain`).
    Toml,
}

enum Reply {
    Json(Shape),
    /// This document: an OpenAPI 3.1 object (its own schema is OpenAPI's, not repeated here).
    Document,
    /// `text/event-stream`: Server-Sent Events.
    EventStream,
    /// Prometheus' text exposition format.
    Metrics,
    /// 101 Switching Protocols: a WebSocket of JSON text frames (`WorkerFrame` up,
    /// `EngineFrame` down, in `components/schemas`), no body.
    WebSocket,
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn query_param(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description, "schema": schema})
}

fn wait_param() -> Value {
    query_param(
        "wait",
        &format!("How long to wait for the run to settle, e.g. `30s` (at most {}s).", MAX_WAIT_MS / 1000),
        json!({"type": "string"}),
    )
}

/// What a page of runs (`with_type`) or of orders takes: for runs, `status` is a
/// [`WorkflowStatus`] (422 otherwise); for orders, an order's status as it shows it (`PENDING`,
/// `CONFIRMED`, `CANCELLED`, `FAILED`, or a label the order definition declares), which is
/// compared, not parsed.
fn list_params(with_type: bool) -> Vec<Value> {
    let status = if with_type {
        query_param("status", "Only runs in this status.", shape::<WorkflowStatus>().reference())
    } else {
        let description = "Only orders in this status (`PENDING`, `CONFIRMED`, `CANCELLED`, `FAILED`, or a label the order definition declares; any other matches none).";
        query_param("status", description, json!({"type": "string"}))
    };
    let mut params = vec![
        status,
        query_param("cursor", "The `next_cursor` of the previous page.", json!({"type": "string"})),
        query_param("limit", "Page size.", json!({"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT})),
    ];
    if with_type {
        params.push(query_param("type", "Only runs of this workflow type.", json!({"type": "string"})));
    }
    params
}

/// The schemas named in the document: a type's own and those it refers to.
type Schemas = Vec<(String, RefOr<Schema>)>;

/// A body named by its Rust type: its name in `components/schemas`, and how to collect its
/// schema with every schema it refers to.
pub(crate) struct Shape {
    name: String,
    collect: fn(&mut Schemas),
}

fn shape<T: ToSchema>() -> Shape {
    Shape {
        name: T::name().into_owned(),
        collect: |schemas| {
            schemas.push((T::name().into_owned(), T::schema()));
            T::schemas(schemas);
        },
    }
}

impl Shape {
    fn reference(&self) -> Value {
        schema(&self.name)
    }
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn id(what: &str) -> Vec<Value> {
    vec![path_param("id", what)]
}

/// Every route of [`super::app`], with what it needs and answers: one row per route, kept on
/// one line each so the table reads as one.
#[rustfmt::skip]
pub(crate) fn operations() -> Vec<Operation> {
    use Access::{Admin, Client, Shop, Signal, Worker};
    let op = |method, path, access, summary, params, body, ok, errors| Operation {
        method,
        path,
        access,
        summary,
        params,
        body,
        ok,
        errors,
    };
    let json = |shape: Shape| Reply::Json(shape);
    let view = || json(shape::<WorkflowView>());
    let order = || json(shape::<OrderView>());
    let body = |shape: Shape| Body::Json(shape);
    let health = || vec![(200, json(shape::<Health>()))];
    vec![
        op("get", "/healthz", None, "Liveness: 503 when the core is not alive.", vec![], Body::None, health(), &[]),
        op("get", "/readyz", None, "Readiness: 503 while shutting down, the disk is full or the core is not alive.", vec![], Body::None, health(), &[]),
        op("get", OPENAPI_PATH, None, "This document.", vec![], Body::None, vec![(200, Reply::Document)], &[]),
        op("post", "/v1/callbacks/{token}", None, "Send the signal an open wait's callback URL names; the token is the credential.", vec![path_param("token", "The callback token.")], body(shape::<CallbackRequest>()), vec![(200, json(shape::<SignalReply>()))], &[404, 409, 410, 415, 422]),
        op("get", "/v1/stats", Some(Admin), "The engine's counters.", vec![], Body::None, vec![(200, json(shape::<StatsView>()))], &[]),
        op("get", "/v1/cluster", Some(Admin), "The cluster's nodes, shards and leases as this node sees them.", vec![], Body::None, vec![(200, json(shape::<ClusterStatus>()))], &[]),
        op("get", "/metrics", Some(Admin), "Prometheus metrics.", vec![], Body::None, vec![(200, Reply::Metrics)], &[]),
        op("post", "/v1/workflows", Some(Admin), "Start a run (202), or find the same one started (200).", vec![], body(shape::<StartWorkflowRequest>()), vec![(200, view()), (202, view())], &[409, 415]),
        op("get", "/v1/workflows", Some(Client), "A page of runs in ID order.", list_params(true), Body::None, vec![(200, json(shape::<WorkflowList>()))], &[]),
        op("get", "/v1/workflows/{id}", Some(Client), "One run, after waiting for it to settle.", [id("The run."), vec![wait_param()]].concat(), Body::None, vec![(200, view())], &[404, 500]),
        op("get", "/v1/workflows/{id}/history", Some(Client), "A run's events (after a sequence number).", [id("The run."), vec![query_param("after", "Only events after this sequence number.", json!({"type": "integer", "minimum": 0})), wait_param(),],] .concat(), Body::None, vec![(200, json(shape::<HistoryResponse>()))], &[404]),
        op("get", "/v1/workflows/{id}/events", Some(Client), "A run's history, then its live events, then its end (SSE).", [id("The run."), vec![query_param("after", "Only events after this sequence number.", json!({"type": "integer", "minimum": 0}))],] .concat(), Body::None, vec![(200, Reply::EventStream)], &[404]),
        op("post", "/v1/workflows/{id}/cancel", Some(Admin), "Cancel a run: it compensates.", id("The run."), body(shape::<ReasonRequest>()), vec![(202, view())], &[404, 409, 415]),
        op("post", "/v1/workflows/{id}/terminate", Some(Admin), "Terminate a run: it ends at once.", id("The run."), body(shape::<ReasonRequest>()), vec![(202, view())], &[404, 409, 415]),
        op("post", "/v1/workflows/{id}/resume", Some(Admin), "Resume a parked run.", id("The run."), body(shape::<ReasonRequest>()), vec![(202, view())], &[404, 409, 415]),
        op("post", "/v1/workflows/{id}/signals/{name}", Some(Signal), "Send a signal to a run.", vec![path_param("id", "The run."), path_param("name", "The signal.")], body(shape::<JsonText>()), vec![(200, json(shape::<SignalReply>()))], &[404, 409, 415]),
        op("get", "/v1/events", Some(Client), "Every committed event after a position, then live (SSE).", vec![query_param("type", "Only runs of this type.", json!({"type": "string"})), query_param("kind", "Only events of this kind.", json!({"type": "string"})), query_param("status", "Only events leaving the run in this status.", shape::<WorkflowStatus>().reference()), query_param("after", "A cursor this engine gave out.", json!({"type": "string"})),], Body::None, vec![(200, Reply::EventStream)], &[]),
        op("get", "/v1/overview/events", Some(Client), "One tick of live statistics a second (SSE).", vec![], Body::None, vec![(200, Reply::EventStream)], &[]),
        op("get", "/v1/definitions", Some(Client), "Registered definitions.", vec![], Body::None, vec![(200, json(shape::<DefinitionList>()))], &[]),
        op("post", "/v1/definitions", Some(Admin), "Register a definition (201), or find it registered (200).", vec![], Body::Toml, vec![(200, json(shape::<RegisteredDefinition>())), (201, json(shape::<RegisteredDefinition>()))], &[409, 415]),
        op("post", "/v1/definitions/check", Some(Client), "Check a definition without registering it.", vec![], Body::Toml, vec![(200, json(shape::<DefinitionPlan>()))], &[415]),
        op("get", "/v1/parked", Some(Client), "Parked runs grouped by error fingerprint.", vec![query_param("group_by", "Only `fingerprint`.", json!({"type": "string", "enum": ["fingerprint"]}))], Body::None, vec![(200, json(shape::<ParkedGroups>()))], &[]),
        op("post", "/v1/redrives", Some(Admin), "Start a redrive job (201), or find the same one (200).", vec![], body(shape::<RedriveRequest>()), vec![(200, json(shape::<RedriveJob>())), (201, json(shape::<RedriveJob>()))], &[409, 415]),
        op("get", "/v1/redrives/{id}", Some(Client), "A redrive job.", id("The job."), Body::None, vec![(200, json(shape::<RedriveJob>()))], &[404]),
        op("delete", "/v1/redrives/{id}", Some(Admin), "Stop a redrive job.", id("The job."), Body::None, vec![(200, json(shape::<RedriveJob>()))], &[404]),
        op("post", "/v1/tokens", Some(Admin), "Create an API token; its secret is in this answer only.", vec![], body(shape::<CreateTokenRequest>()), vec![(201, json(shape::<CreatedToken>()))], &[409, 415]),
        op("get", "/v1/tokens", Some(Admin), "API tokens, without their secrets.", vec![], Body::None, vec![(200, json(shape::<TokenList>()))], &[]),
        op("post", "/v1/tokens/{id}/revoke", Some(Admin), "Revoke an API token.", id("The token."), Body::None, vec![(200, json(shape::<TokenView>()))], &[404]),
        op("post", "/api/orders", Some(Shop), "Place an order (seed API). With `wait`: 200 once the order is final, 202 (with `Location`) when the wait runs out.", vec![wait_param()], body(shape::<PlaceOrderRequest>()), vec![(200, order()), (202, order())], &[409, 415]),
        op("get", "/api/orders", Some(Shop), "A page of orders.", list_params(false), Body::None, vec![(200, json(shape::<OrderList>()))], &[]),
        op("get", "/api/orders/{id}", Some(Shop), "One order, after waiting for it to settle.", [id("The order."), vec![wait_param()]].concat(), Body::None, vec![(200, order())], &[404]),
        op("post", "/api/orders/{id}/cancel", Some(Admin), "Cancel an order.", id("The order."), Body::None, vec![(202, order())], &[404, 409]),
        op("post", "/api/notifications/tickets", Some(Shop), "Mint a ticket for a customer's notification WebSocket.", vec![], body(shape::<TicketRequest>()), vec![(201, json(shape::<NotificationTicket>()))], &[415]),
        op("post", "/v1/tasks/poll", Some(Worker), TASKS_POLL_SUMMARY.as_str(), vec![], body(shape::<PollRequest>()), vec![(200, json(shape::<PollResponse>()))], &[415]),
        op("post", "/v1/tasks/complete", Some(Worker), "Complete a task.", vec![], body(shape::<CompleteRequest>()), vec![(200, json(shape::<TaskAck>()))], &[404, 409, 415]),
        op("post", "/v1/tasks/fail", Some(Worker), "Fail a task's attempt.", vec![], body(shape::<FailRequest>()), vec![(200, json(shape::<TaskAck>()))], &[404, 409, 415]),
        op("post", "/v1/tasks/heartbeat", Some(Worker), "Heartbeat a task.", vec![], body(shape::<HeartbeatRequest>()), vec![(200, json(shape::<TaskAck>()))], &[404, 409, 415]),
        op("post", "/v1/tasks/report", Some(Worker), "Report a batch of outcomes.", vec![], body(shape::<ReportBatchRequest>()), vec![(200, json(shape::<ReportBatchResponse>()))], &[415]),
        op("get", "/v1/tasks/stream", Some(Worker), TASKS_STREAM_SUMMARY.as_str(), vec![], Body::None, vec![(101, Reply::WebSocket)], &[426]),
        op("get", "/v1/tasks/nodes", Some(Worker), "The live engine nodes a worker long-polls (each hands out its own shards' tasks).", vec![], Body::None, vec![(200, json(shape::<NodeList>()))], &[]),
        op("post", "/v1/notifications/verify", Some(Worker), "Verify a notification WebSocket's credential.", vec![], body(shape::<VerifyRequest>()), vec![(200, json(shape::<Verified>()))], &[415]),
    ]
}

/// The task stream's limits, said where a client reads it.
static TASKS_STREAM_SUMMARY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "The streaming worker protocol: a WebSocket of JSON text frames (WorkerFrame up, EngineFrame down), \
         the first a hello; frames of at most {MAX_STREAM_FRAME_BYTES} bytes, at most {MAX_STREAM_CREDIT} credit \
         per queue and {MAX_STREAM_QUEUES} queues; 503 OVERLOADED when the engine serves all the streams it may."
    )
});

/// Why `max_tasks` and `wait_ms` are bounded, said where a client reads it.
static TASKS_POLL_SUMMARY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!("Long-poll a queue for up to {MAX_TASKS_PER_POLL} tasks, waiting at most {MAX_WAIT_MS} ms.")
});

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Admin => "admin",
        Access::Client => "client or admin (not a customer's own credential)",
        Access::Shop => "client or admin (a customer sees only their own orders)",
        Access::Worker => "worker or admin",
        Access::Signal => "signaler or admin",
    }
}

fn reply(reply: &Reply) -> Value {
    match reply {
        Reply::Json(shape) => json!({"application/json": {"schema": shape.reference()}}),
        Reply::Document => {
            json!({"application/json": {"schema": {"type": "object", "required": ["openapi", "paths"]}}})
        }
        Reply::EventStream => json!({"text/event-stream": {"schema": {"type": "string"}}}),
        Reply::Metrics => json!({"text/plain": {"schema": {"type": "string"}}}),
        Reply::WebSocket => json!({}),
    }
}

fn operation(op: &Operation) -> Value {
    let mut responses = Map::new();
    for (status, body) in &op.ok {
        let answer = match body {
            Reply::WebSocket => {
                json!({"description": "Switching Protocols: the task stream's WebSocket (frames: WorkerFrame, EngineFrame)."})
            }
            body => json!({"description": "Success.", "content": reply(body)}),
        };
        responses.insert(status.to_string(), answer);
    }
    let common = if op.access.is_some() { AUTHENTICATED_ERRORS } else { PUBLIC_ERRORS };
    for status in common.iter().chain(op.errors) {
        responses.insert(status.to_string(), json!({"$ref": "#/components/responses/Error"}));
    }
    let mut value = json!({
        "operationId": format!("{} {}", op.method, op.path),
        "summary": op.summary,
        "parameters": op.params,
        "responses": responses,
    });
    match op.access {
        Some(access) => {
            value["security"] = json!([{"bearer": []}]);
            value["description"] = json!(format!("Needs a credential of role {}.", access_name(access)));
        }
        None => value["security"] = json!([]),
    }
    match &op.body {
        Body::None => {}
        Body::Json(shape) => {
            let schema = shape.reference();
            value["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": schema}}});
        }
        Body::Toml => {
            value["requestBody"] = json!({"required": true, "content": {
                "application/toml": {"schema": {"type": "string"}},
                "text/plain": {"schema": {"type": "string"}}
            }});
        }
    }
    value
}

/// `components`: the credential scheme, the one error answer, and the schema of every body
/// the operations name (with the schemas those refer to), each derived from its Rust type.
fn components(operations: &[Operation]) -> Value {
    let mut collected = Schemas::new();
    // Named by the error answer, the list parameters and the task stream, not by a body.
    for always in [shape::<ErrorBody>(), shape::<WorkflowStatus>(), shape::<WorkerFrame>(), shape::<EngineFrame>()] {
        (always.collect)(&mut collected);
    }
    for op in operations {
        if let Body::Json(shape) = &op.body {
            (shape.collect)(&mut collected);
        }
        for (_, reply) in &op.ok {
            if let Reply::Json(shape) = reply {
                (shape.collect)(&mut collected);
            }
        }
    }
    let mut schemas = Map::new();
    for (name, schema) in collected {
        // A schema that is not serializable cannot happen (utoipa's are plain data); were it
        // to, the document would name a missing schema, which its unit test catches.
        if let Ok(value) = serde_json::to_value(&schema) {
            schemas.insert(name, value);
        }
    }
    json!({
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "An API token, the admin token file's token or an HS256 JWT."}
        },
        "responses": {
            "Error": {
                "description": "A refusal: its code is stable, its message says why.",
                "content": {"application/json": {"schema": shape::<ErrorBody>().reference()}}
            }
        },
        "schemas": schemas,
    })
}

/// The document, built from [`operations`].
pub(crate) fn document() -> Value {
    let operations = operations();
    let mut paths = Map::new();
    for op in &operations {
        let item = paths.entry(op.path).or_insert_with(|| json!({}));
        item[op.method] = operation(op);
    }
    json!({
        // 3.1: utoipa's schemas are JSON Schema 2020-12 (`"type": ["integer", "null"]`).
        "openapi": "3.1.0",
        "info": {
            "title": "shop-engine",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The durable workflow engine's HTTP API. Every error is `{\"error\":{\"code\",\"message\"}}`."
        },
        "paths": paths,
        "components": components(&operations),
    })
}

/// `GET /v1/openapi.json`: the document, built once.
pub(crate) async fn serve() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(|| document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The `(method, path)` pairs `app()` routes, read from its source: each `.route(` line
    /// names a path and one or more method routers.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let app =
            source.split("pub fn app(").nth(1).and_then(|rest| rest.split("\n}\n").next()).expect("app() in mod.rs");
        let mut routes = BTreeSet::new();
        for line in app.lines().filter(|l| l.trim_start().starts_with(".route(")) {
            let path = if line.contains("openapi::OPENAPI_PATH") {
                OPENAPI_PATH.to_owned()
            } else {
                let axum_path = line.split('"').nth(1).expect("a quoted path");
                let segments =
                    axum_path.split('/').map(|s| s.strip_prefix(':').map_or(s.to_owned(), |p| format!("{{{p}}}")));
                segments.collect::<Vec<_>>().join("/")
            };
            for method in ["get", "post", "delete", "put", "patch"] {
                if line.contains(&format!(" {method}(")) || line.contains(&format!(".{method}(")) {
                    routes.insert((method.to_owned(), path.clone()));
                }
            }
        }
        routes
    }

    #[test]
    fn every_route_of_the_router_is_documented_and_no_other() {
        let documented: BTreeSet<_> =
            operations().iter().map(|op| (op.method.to_owned(), op.path.to_owned())).collect();
        let routed = routed();
        assert!(routed.len() > 30, "the router's source was not read: {routed:?}");
        let missing: Vec<_> = routed.difference(&documented).collect();
        let invented: Vec<_> = documented.difference(&routed).collect();
        assert!(missing.is_empty(), "routed but not in the OpenAPI document: {missing:?}");
        assert!(invented.is_empty(), "in the OpenAPI document but not routed: {invented:?}");
    }

    #[test]
    fn the_document_is_openapi_3_with_every_error_in_the_one_shape() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, op) in item.as_object().expect("a path item") {
                let responses = op["responses"].as_object().expect("responses");
                for (status, response) in responses {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert_eq!(response["$ref"], "#/components/responses/Error", "{method} {path} {status}");
                    }
                }
                let public = op["security"].as_array().expect("security").is_empty();
                assert_eq!(public, !responses.contains_key("401"), "{method} {path}");
            }
        }
        let public: Vec<_> = operations().into_iter().filter(|op| op.access.is_none()).map(|op| op.path).collect();
        assert_eq!(public, ["/healthz", "/readyz", OPENAPI_PATH, "/v1/callbacks/{token}"]);
    }

    /// Every `$ref` in `value`, recursively.
    fn references(value: &Value, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.insert(target.clone());
                }
                map.values().for_each(|v| references(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| references(v, found)),
            _ => {}
        }
    }

    #[test]
    fn every_reference_names_a_schema_of_the_document() {
        let doc = document();
        let mut found = BTreeSet::new();
        references(&doc, &mut found);
        for target in &found {
            let path = target.strip_prefix("#/").expect("a local reference");
            let resolved = path.split('/').fold(&doc, |v, key| &v[key]);
            assert!(resolved.is_object(), "{target} is named but not in the document");
        }
        assert!(found.len() > 40, "bodies are named by their types: {found:?}");
    }

    #[test]
    fn bodies_are_the_shapes_serde_reads_and_writes() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let required = |name: &str| -> BTreeSet<String> {
            let list = schemas[name]["required"].as_array().unwrap_or_else(|| panic!("{name} has required fields"));
            list.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        // Renamed fields under their wire names; optional (skipped when absent) ones not required.
        let view = required("WorkflowView");
        assert!(view.contains("type") && view.contains("created_at_ms") && !view.contains("why"), "{view:?}");
        assert_eq!(
            schemas["WorkflowStatus"]["enum"],
            json!(["RUNNING", "COMPLETED", "COMPENSATED", "FAILED", "TERMINATED"])
        );
        // camelCase where serde says so; strict request bodies refuse unknown fields.
        assert!(required("StatsView").contains("activeWorkflows"));
        assert!(required("PlaceOrderRequest").contains("orderItems"));
        assert_eq!(schemas["PollRequest"]["additionalProperties"], json!(false));
        // IDs are bounded strings; payloads are any JSON.
        assert_eq!(schemas["WorkflowId"]["maxLength"], json!(shop_types::limits::MAX_ID_LEN));
        assert!(schemas["JsonText"].get("type").is_none(), "any JSON: {}", schemas["JsonText"]);
        let start = &doc["paths"]["/v1/workflows"]["post"];
        assert_eq!(
            start["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/StartWorkflowRequest"
        );
        assert_eq!(
            start["responses"]["202"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/WorkflowView"
        );
    }
}
