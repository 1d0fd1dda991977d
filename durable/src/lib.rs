//! shop-durable: the one toolkit both the engine and the workers use to keep data in sled.
//!
//! It owns: what a write must survive before it is acknowledged ([`Durability`]), opening a
//! sled store with it ([`open`], keeping sled's log file at hand to `fdatasync`), making
//! everything applied so far durable ([`Opened::sync`]), group commit (one sync for every
//! writer that asked meanwhile: [`commit::group_commit`] and the async [`Flusher`] built on
//! it), a write-ahead log in front of a tree ([`wal::LoggedTree`]: logged and synced first,
//! applied to sled after), the one codec of persisted records ([`codec`]), which still reads every format
//! either program ever wrote, and the binaries' async runtime sized around the threads that
//! sync ([`runtime`]).
//!
//! It must never know what is stored: no key layout, no engine or shop type. The wire and
//! domain types live in `shop-types`, which never depends on this crate (it stays free of
//! sled).

pub mod codec;
pub mod commit;
mod open;
pub mod runtime;
pub mod wal;

#[cfg(test)]
mod test_support;

pub use commit::Flusher;
pub use open::{open, Durability, Error, OpenOptions, Opened};
pub use wal::{ApplyWindow, LogBatch, LoggedTree, WalOptions};
