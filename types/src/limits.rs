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
