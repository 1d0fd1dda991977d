//! Distributed traces of runs, shared by the engine and the workers: the W3C `traceparent`
//! (parsed and written), span ids derived from recorded facts, and a [`Tracer`] that records
//! spans whose start and end times are given, exported over OTLP/HTTP (protobuf).
//!
//! Why spans are recorded whole, never held open: a run waits durably (timers, retries, an
//! engine restart) and an open span lives only in memory. So every span here is made at once
//! from times already recorded (a history's events, a measured attempt) and ended at once;
//! a span that a later span names as its parent gets an id derived from what identifies it
//! (run, step, attempt), so both sides agree without storing the id.
//!
//! Must never: install an exporter without an endpoint (no endpoint, no connection), block
//! its caller on the network (spans go to a bounded batch queue; a full queue drops), or
//! panic on a bad `traceparent` (it is input: [`TraceParent::parse`] says why it is refused).

pub use opentelemetry::trace::SpanKind;
use opentelemetry::trace::{
    Link, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::Context;
pub use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use sha2::{Digest, Sha256};
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_LEN: usize = 55;

/// The path OTLP/HTTP receivers take traces on, appended to an endpoint given without it.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

/// How long one export may take before it is given up (the spans are dropped, the run is not
/// affected).
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a `traceparent` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("traceparent must be {TRACEPARENT_LEN} characters `00-<trace id>-<span id>-<flags>`")]
    Shape,
    #[error("traceparent version {0:?} is not supported (only 00)")]
    Version(String),
    #[error("traceparent trace id and span id must be lowercase hex and not all zero")]
    Ids,
}

/// Why tracing could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("OTLP endpoint {0:?} must be an http:// or https:// URL")]
    Endpoint(String),
    #[error("OTLP exporter: {0}")]
    Exporter(String),
}

/// A W3C trace context: the trace, one span in it, and whether it is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a version-00 `traceparent` header value.
    pub fn parse(text: &str) -> Result<TraceParent, ParseError> {
        let text = text.trim();
        if text.len() != TRACEPARENT_LEN || !text.is_ascii() {
            return Err(ParseError::Shape);
        }
        let parts: Vec<&str> = text.split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return Err(ParseError::Shape);
        };
        if *version != "00" {
            return Err(ParseError::Version((*version).to_owned()));
        }
        let trace_id: [u8; 16] = hex(trace).ok_or(ParseError::Ids)?;
        let span_id: [u8; 8] = hex(span).ok_or(ParseError::Ids)?;
        let [flags]: [u8; 1] = hex(flags).ok_or(ParseError::Shape)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(ParseError::Ids);
        }
        Ok(TraceParent { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// A new trace, with its root span: random ids.
    pub fn new_root() -> TraceParent {
        let ids = RandomIdGenerator::default();
        TraceParent { trace_id: ids.new_trace_id().to_bytes(), span_id: ids.new_span_id().to_bytes(), sampled: true }
    }

    /// A new span of the same trace: a random id.
    pub fn new_child(&self) -> TraceParent {
        TraceParent { span_id: RandomIdGenerator::default().new_span_id().to_bytes(), ..*self }
    }

    /// The span of the same trace whose id is derived from `parts` (what identifies it, e.g.
    /// run, step and attempt): whoever knows the parts names the same span.
    pub fn derived(&self, parts: &[&[u8]]) -> TraceParent {
        let mut digest = Sha256::new();
        digest.update(self.trace_id);
        for part in parts {
            // Length-prefixed, so ("ab","c") and ("a","bc") differ.
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let mut span_id = [0u8; 8];
        span_id.copy_from_slice(&digest.finalize()[..8]);
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        TraceParent { span_id, ..*self }
    }

    fn span_context(&self) -> SpanContext {
        let flags = if self.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            flags,
            true,
            TraceState::default(),
        )
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-")?;
        for byte in self.trace_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-")?;
        for byte in self.span_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-{:02x}", u8::from(self.sampled))
    }
}

fn hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// One span, recorded whole: its own context (trace and span id), its parent's span id (or
/// none for a root), its times, and whether it failed.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: String,
    pub context: TraceParent,
    pub parent: Option<TraceParent>,
    pub kind: SpanKind,
    pub start: SystemTime,
    pub end: SystemTime,
    /// `Some(description)` marks the span's status as an error.
    pub error: Option<String>,
    pub attributes: Vec<KeyValue>,
    /// Other traces this span continues (a resumed run's earlier trace).
    pub links: Vec<TraceParent>,
}

impl SpanRecord {
    /// A span named `name` in `context`, a child of `parent`, from `start` to `end`.
    pub fn new(name: impl Into<String>, context: TraceParent, parent: Option<TraceParent>) -> SpanRecord {
        SpanRecord {
            name: name.into(),
            context,
            parent,
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            end: SystemTime::now(),
            error: None,
            attributes: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Sets start and end from clock milliseconds since the epoch (the engine's recorded times).
    pub fn between_ms(mut self, start_ms: u64, end_ms: u64) -> SpanRecord {
        self.start = UNIX_EPOCH + Duration::from_millis(start_ms);
        self.end = UNIX_EPOCH + Duration::from_millis(end_ms.max(start_ms));
        self
    }

    pub fn attribute(mut self, key: &'static str, value: impl Into<String>) -> SpanRecord {
        self.attributes.push(KeyValue::new(key, value.into()));
        self
    }
}

/// Records spans and exports them, or does nothing at all when tracing is off.
#[derive(Clone, Debug)]
pub struct Tracer {
    inner: Option<(SdkTracerProvider, SdkTracer)>,
}

impl Tracer {
    /// Tracing off: nothing is recorded, no exporter exists, nothing connects anywhere.
    pub fn off() -> Tracer {
        Tracer { inner: None }
    }

    /// Tracing on, exporting to the OTLP/HTTP `endpoint` (`http://host:4318`, with or
    /// without `/v1/traces`) as service `service`, through a batch queue on its own thread.
    pub fn otlp(endpoint: &str, service: &'static str) -> Result<Tracer, Error> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(Error::Endpoint(endpoint.to_owned()));
        }
        let trimmed = endpoint.trim_end_matches('/');
        let url = if trimmed.ends_with(OTLP_TRACES_PATH) {
            trimmed.to_owned()
        } else {
            format!("{trimmed}{OTLP_TRACES_PATH}")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| Error::Exporter(e.to_string()))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        let tracer = provider.tracer(service);
        Ok(Tracer { inner: Some((provider, tracer)) })
    }

    /// `otlp` when an endpoint is given, `off` otherwise.
    pub fn from_endpoint(endpoint: Option<&str>, service: &'static str) -> Result<Tracer, Error> {
        endpoint.map_or(Ok(Tracer::off()), |endpoint| Tracer::otlp(endpoint, service))
    }

    pub fn is_on(&self) -> bool {
        self.inner.is_some()
    }

    /// Records `span` whole (started and ended at its recorded times) for export.
    pub fn record(&self, span: SpanRecord) {
        let Some((_, tracer)) = &self.inner else {
            return;
        };
        let parent = match span.parent {
            Some(parent) => Context::new().with_remote_span_context(parent.span_context()),
            None => Context::new(),
        };
        let status = match span.error {
            Some(description) => Status::error(description),
            None => Status::Ok,
        };
        let links = span.links.iter().map(|link| Link::with_context(link.span_context())).collect();
        let builder = tracer
            .span_builder(span.name)
            .with_trace_id(TraceId::from_bytes(span.context.trace_id))
            .with_span_id(SpanId::from_bytes(span.context.span_id))
            .with_kind(span.kind)
            .with_start_time(span.start)
            .with_attributes(span.attributes)
            .with_links(links)
            .with_status(status);
        let mut recorded = tracer.build_with_context(builder, &parent);
        opentelemetry::trace::Span::end_with_timestamp(&mut recorded, span.end);
    }

    /// Exports what is queued and stops the exporter (at shutdown; bounded by
    /// [`EXPORT_TIMEOUT`]).
    pub fn shutdown(&self) {
        if let Some((provider, _)) = &self.inner {
            let _ = provider.shutdown_with_timeout(EXPORT_TIMEOUT);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_round_trips() {
        let parsed = TraceParent::parse(EXAMPLE).expect("valid");
        assert!(parsed.sampled);
        assert_eq!(parsed.to_string(), EXAMPLE);
        assert_eq!(EXAMPLE.len(), TRACEPARENT_LEN);
    }

    #[test]
    fn bad_traceparents_are_refused_with_a_reason() {
        assert_eq!(TraceParent::parse(&EXAMPLE[..TRACEPARENT_LEN - 1]), Err(ParseError::Shape));
        assert_eq!(TraceParent::parse(&format!("{EXAMPLE}0")), Err(ParseError::Shape));
        assert_eq!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Err(ParseError::Version("01".into()))
        );
        assert_eq!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), Err(ParseError::Ids));
        assert_eq!(TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), Err(ParseError::Ids));
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é"),
            Err(ParseError::Shape)
        );
    }

    #[test]
    fn derived_spans_agree_and_differ_by_parts() {
        let root = TraceParent::parse(EXAMPLE).expect("valid");
        let a = root.derived(&[b"run", b"step", &1u32.to_be_bytes()]);
        assert_eq!(a, root.derived(&[b"run", b"step", &1u32.to_be_bytes()]));
        assert_eq!(a.trace_id, root.trace_id);
        assert_ne!(a.span_id, root.derived(&[b"run", b"step", &2u32.to_be_bytes()]).span_id);
        assert_ne!(root.derived(&[b"ab", b"c"]).span_id, root.derived(&[b"a", b"bc"]).span_id);
    }

    #[test]
    fn off_records_nothing_and_bad_endpoints_are_refused() {
        let off = Tracer::from_endpoint(None, "t").expect("off");
        assert!(!off.is_on());
        off.record(SpanRecord::new("x", TraceParent::new_root(), None));
        assert!(matches!(Tracer::otlp("localhost:4318", "t"), Err(Error::Endpoint(_))));
    }
}
