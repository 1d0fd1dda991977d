//! The product's explicit limits, in one place so the engine, the workers, the CLI and the
//! documentation agree. Each is enforced where input enters and tested at its edge.

/// Largest accepted HTTP request body, and so the largest workflow input or step output.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest workflow ID, queue name or idempotency key accepted.
pub const MAX_ID_LEN: usize = 128;
/// The name a step's compensation gets: `<step name><COMPENSATION_SUFFIX>`.
pub const COMPENSATION_SUFFIX: &str = ".compensation";
/// Longest step name: a declared one is an ID (at most [`MAX_ID_LEN`]), and its
/// compensation's name adds [`COMPENSATION_SUFFIX`].
pub const MAX_STEP_NAME_LEN: usize = MAX_ID_LEN + COMPENSATION_SUFFIX.len();
/// Default cap on events in one run's history; the engine fails the run rather than exceed it.
pub const DEFAULT_MAX_HISTORY_EVENTS: u64 = 10_000;
/// Lines per order.
pub const MAX_ORDER_LINES: usize = 100;
/// Longest shipping address accepted, in bytes.
pub const MAX_SHIPPING_ADDRESS_BYTES: usize = 1024;
/// Units per order line.
pub const MAX_LINE_QUANTITY: i64 = 1000;
/// Tasks one poll may return.
pub const MAX_TASKS_PER_POLL: u32 = 256;
/// Reports one batch report may carry.
pub const MAX_REPORTS_PER_BATCH: usize = 256;
/// Largest frame a worker may send on the task stream (`/v1/tasks/stream`): a `Report` of
/// several reports, each with a step's output of at most [`MAX_BODY_BYTES`]. The engine
/// closes a stream that sends a larger one (WebSocket close 1009); a worker splits its
/// reports into frames under it.
pub const MAX_STREAM_FRAME_BYTES: usize = 4 * MAX_BODY_BYTES;
/// Most credit one task stream may hold on one queue (free slots announced and not yet
/// filled): far above any worker's capacity (`concurrency` × tasks per poll), so only a
/// broken or hostile client reaches it, and the engine closes its stream.
pub const MAX_STREAM_CREDIT: u32 = 16_384;
/// Most queues one task stream's `Hello` may name.
pub const MAX_STREAM_QUEUES: usize = 32;
/// How often the engine pings a task stream; a worker that hears nothing (frame or ping) for
/// [`STREAM_IDLE_TIMEOUT_MS`] takes the connection for dead and opens another.
pub const STREAM_PING_INTERVAL_MS: u64 = 5_000;
/// How long either side of a task stream waits without receiving anything (a pong counts)
/// before it drops the stream: three pings missed.
pub const STREAM_IDLE_TIMEOUT_MS: u64 = 3 * STREAM_PING_INTERVAL_MS;
/// Longest a long-poll (`wait`) may block, for task polls and workflow waits alike.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Workflows listed per page at most.
pub const MAX_LIST_LIMIT: usize = 1000;
/// How long this project's HTTP clients keep an idle connection to the engine for reuse.
/// Shorter than the engine's head/idle timeout (15 s by default, `--head-timeout`), so a
/// client never sends a request on a connection the engine is closing for idleness.
pub const CLIENT_POOL_IDLE_MS: u64 = 5_000;
/// Ids of open runs shown per older version when a new version of a definition is
/// registered (`RegisteredDefinition`); the count is always exact.
pub const OPEN_RUNS_SAMPLE: usize = 5;
/// Largest payload one signal may carry, in bytes of JSON text. A signal's payload is kept
/// in the run's history and, once a wait consumes it, becomes that step's output, passed to
/// every later task, so it is held well under [`MAX_BODY_BYTES`]. Over it the signal is
/// refused with **413 `SIGNAL_TOO_LARGE`**: the request itself is too large for what it asks
/// (413 rather than 422, as the fix is a smaller body, not a different one).
pub const MAX_SIGNAL_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most payload bytes one run holds in signals received but not yet consumed by a wait (a
/// consumed signal keeps only its key, name and digest). A signal that would be buffered past
/// it is refused with **413 `SIGNAL_BUFFER_FULL`**, so buffered signals can never make a run
/// larger than this whatever callers send; it fits [`MAX_SIGNAL_PAYLOAD_BYTES`] four times.
pub const MAX_BUFFERED_SIGNAL_BYTES: usize = 4 * MAX_SIGNAL_PAYLOAD_BYTES;
