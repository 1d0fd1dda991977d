//! Ending with the parent: what `--exit-with-parent` of `shop-engine` and `shop-worker`
//! watches.
//!
//! A supervisor (`shopctl dev`, `demo`, `bench`, the test harness) spawns its children with a
//! piped stdin and keeps the write end. When the supervisor ends for any reason, SIGKILL
//! included, the kernel closes that end and the child reads EOF. This is sturdier than
//! `PR_SET_PDEATHSIG`, which fires when the parent *thread* that spawned the child exits
//! (tokio's blocking-pool threads come and go), and needs no `unsafe` `pre_exec`.
//!
//! This module only notices the EOF and calls back: it must never stop the process itself,
//! so the caller shuts down through the same graceful path as on SIGTERM. It uses std only,
//! to keep this crate free of tokio.

use std::io::{ErrorKind, Read};

/// Bytes read from the pipe at a time; whatever a parent writes is ignored.
const READ_BUFFER_BYTES: usize = 256;

/// Spawns a thread that reads `input` (the process's stdin) until it ends, then calls
/// `then` once. A read error other than an interruption counts as the end: a stdin that
/// cannot be read can no longer tell us that the parent lives.
pub fn on_eof<R, F>(input: R, then: F) -> std::io::Result<()>
where
    R: Read + Send + 'static,
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name("parent-watch".into()).spawn(move || {
        read_to_end(input);
        then();
    })?;
    Ok(())
}

fn read_to_end(mut input: impl Read) {
    let mut buffer = [0u8; READ_BUFFER_BYTES];
    loop {
        match input.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    /// How long a test waits for the callback; it comes at once in practice.
    const CALLBACK_DEADLINE: Duration = Duration::from_secs(10);

    /// A pipe stand-in: reads block until the writer sends bytes or goes away (then EOF).
    struct Pipe(mpsc::Receiver<Vec<u8>>);

    impl Read for Pipe {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            match self.0.recv() {
                Ok(bytes) => {
                    let n = bytes.len().min(buffer.len());
                    buffer[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                Err(_) => Ok(0),
            }
        }
    }

    #[test]
    fn the_callback_runs_once_the_writer_is_gone_and_not_before() {
        let (writer, pipe) = mpsc::channel::<Vec<u8>>();
        let (called, callback) = mpsc::channel();
        on_eof(Pipe(pipe), move || called.send(()).expect("the test waits")).expect("spawns");
        // What the parent writes is read and ignored.
        writer.send(vec![7u8; READ_BUFFER_BYTES * 2]).expect("the watcher reads");
        assert_eq!(callback.recv_timeout(Duration::from_millis(100)), Err(mpsc::RecvTimeoutError::Timeout));
        drop(writer);
        assert_eq!(callback.recv_timeout(CALLBACK_DEADLINE), Ok(()));
    }

    #[test]
    fn a_read_error_counts_as_the_end() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::new(ErrorKind::BrokenPipe, "gone"))
            }
        }
        let (sender, receiver) = mpsc::channel();
        on_eof(Broken, move || sender.send(()).expect("the test waits")).expect("spawns");
        assert_eq!(receiver.recv_timeout(CALLBACK_DEADLINE), Ok(()));
    }
}
