//! Helpers the crate's tests share. Test-only: never part of the library.

use crate::{open, OpenOptions, Opened};
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens a store that was just dropped again. Dropping the last handle closes it, but sled's
/// background threads may hold its file (and so its lock) a moment longer (a CI run saw the
/// lock still taken), so a refusal is retried, for at most 10 s.
pub(crate) fn reopen(path: &Path, options: OpenOptions) -> Opened {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(path, options) {
            Ok(store) => return store,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(error) => panic!("the store does not open again: {error}"),
        }
    }
}
