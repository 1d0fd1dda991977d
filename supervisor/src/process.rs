//! One child process: spawning it so that it ends with us, waiting until *it* (not whoever
//! else holds its port) answers `/healthz`, signalling, stopping and reaping it, and
//! explaining how it ended, with the tail of its log.
//!
//! This module must never call a child ready on the word of another process, and never let
//! a [`Process`] go without its child being killed and reaped.

use crate::{human, Error, HEALTH_POLL_INTERVAL};
use shop_client::Client;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long [`Process::kill9`] waits for the kernel to reap a SIGKILLed child; it takes
/// microseconds, the bound only keeps a wedged kernel from hanging a `Drop`.
const REAP_DEADLINE: Duration = Duration::from_secs(5);
/// Pause between two checks whether a killed or stopping child has exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Both to our stderr (a child's stdout is log output to us: our stdout is for data).
    Inherit,
    /// Both to a file: emptied first, or appended to (a restarted child keeps the story of
    /// the ones before it).
    LogFile { path: PathBuf, append: bool },
}

impl Output {
    /// The same output, appending from now on.
    pub(crate) fn appending(&self) -> Output {
        match self {
            Output::Inherit => Output::Inherit,
            Output::LogFile { path, .. } => Output::LogFile { path: path.clone(), append: true },
        }
    }
}

/// The signals a supervisor sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Stop,
    Cont,
    Kill,
}

/// How [`Process::stop`] ended a child.
#[derive(Debug)]
pub enum Stopped {
    /// It exited within the grace period after SIGTERM.
    Exited(ExitStatus),
    /// It did not, and was killed.
    Killed,
    /// It could not be killed or waited for.
    Failed(std::io::Error),
}

/// A running child. Its stdin's write end lives in `child` for as long as this handle.
pub struct Process {
    name: String,
    child: Child,
    log: Option<PathBuf>,
}

impl Process {
    /// Spawns `command` (which must carry `--exit-with-parent`) with a piped stdin, in its
    /// own process group, its output as `output` says.
    pub fn spawn(name: &str, command: &mut Command, output: &Output) -> Result<Process, Error> {
        let (stdout, stderr, log) = match output {
            Output::Inherit => {
                let stderr = std::io::stderr()
                    .as_fd()
                    .try_clone_to_owned()
                    .map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
                (Stdio::from(stderr), Stdio::inherit(), None)
            }
            Output::LogFile { path, append } => {
                let log_error = |source| Error::Log { path: path.display().to_string(), source };
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .append(*append)
                    .truncate(!*append)
                    .open(path)
                    .map_err(log_error)?;
                let copy = file.try_clone().map_err(log_error)?;
                (Stdio::from(file), Stdio::from(copy), Some(path.clone()))
            }
        };
        let child = command
            // Kept open, never written: its end is the child's sign that we are gone.
            .stdin(Stdio::piped())
            .stdout(stdout)
            .stderr(stderr)
            // Its own process group: a Ctrl-C at the terminal reaches only us, and we stop
            // the children in order instead of all of them dying at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Spawn { name: name.to_owned(), source })?;
        Ok(Process { name: name.to_owned(), child, log })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's pid while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The log file, when the output goes to one.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// Waits until this child answers `health`'s `/healthz` naming its own pid. Fails when
    /// it exits first (naming any other process that answered on its address meanwhile, the
    /// usual reason: an earlier stack still running) or when `timeout` passes.
    pub async fn wait_ready(&mut self, health: &Client, timeout: Duration) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        // What answered /healthz that is not our child: its pid, if it named one.
        let mut other: Option<Option<u32>> = None;
        loop {
            if let Some(status) = self.try_exit()? {
                let exited = self.describe_exit(Ok(status));
                return Err(match other {
                    Some(pid) => {
                        Error::AddressTaken(format!("{exited} during start-up; {}", self.impostor(health, pid)))
                    }
                    None => Error::NotReady(format!("{exited} during start-up")),
                });
            }
            match health.health_pid().await {
                Some(Some(pid)) if Some(pid) == self.child.id() => return Ok(()),
                Some(pid) => other = Some(pid),
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                let waited = human(timeout);
                return Err(Error::NotReady(match other {
                    Some(pid) => format!("{} did not start within {waited}; {}", self.name, self.impostor(health, pid)),
                    None => format!("{} did not answer /healthz at {} within {waited}", self.name, health.base()),
                }));
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }

    /// "another process (pid 12) answers http://...: is an earlier shop-engine still running?"
    fn impostor(&self, health: &Client, pid: Option<u32>) -> String {
        let who = match pid {
            Some(pid) => format!("another process (pid {pid})"),
            None => "another process".to_owned(),
        };
        format!("{who} answers {}healthz: is an earlier {} still running?", health.base(), self.name)
    }

    /// The exit status, once the child has exited (reaping it).
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(|source| Error::Wait { name: self.name.clone(), source })
    }

    /// Sends `signal` to the child; an exited child is not an error for SIGKILL and SIGTERM.
    pub fn signal(&self, signal: Signal) -> Result<(), Error> {
        let failed = |reason: String| Error::Signal { name: self.name.clone(), signal, reason };
        let pid = self.child.id().ok_or_else(|| failed("it has exited".to_owned()))?;
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or_else(|| failed(format!("{pid} is not a process ID")))?;
        let raw = match signal {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Stop => rustix::process::Signal::STOP,
            Signal::Cont => rustix::process::Signal::CONT,
            Signal::Kill => rustix::process::Signal::KILL,
        };
        rustix::process::kill_process(pid, raw).map_err(|err| failed(err.to_string()))
    }

    /// SIGKILL and reap: nothing gets to flush or say goodbye. Synchronous (bounded by
    /// [`REAP_DEADLINE`]) so that it can run in `Drop` and in tests without an `.await`.
    pub fn kill9(&mut self) {
        // An error means it has already exited, which is what we want.
        let _ = self.child.start_kill();
        let deadline = std::time::Instant::now() + REAP_DEADLINE;
        while std::time::Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(None) => std::thread::sleep(EXIT_POLL_INTERVAL),
                Ok(Some(_)) | Err(_) => return,
            }
        }
    }

    /// SIGTERM, then waits up to `deadline` for the child to exit by itself; past it the
    /// child is killed and the error says so.
    pub async fn terminate(&mut self, deadline: Duration) -> Result<ExitStatus, Error> {
        // Failure means it has already exited; the wait below collects it.
        let _ = self.signal(Signal::Term);
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.map_err(|source| Error::Wait { name: self.name.clone(), source }),
            Err(_) => {
                self.kill9();
                Err(Error::StillRunning { name: self.name.clone(), waited: deadline })
            }
        }
    }

    /// SIGTERM, then up to `grace` for a clean exit, then SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> Stopped {
        let _ = self.signal(Signal::Term);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => Stopped::Exited(status),
            Ok(Err(err)) => Stopped::Failed(err),
            Err(_) => match self.child.kill().await {
                Ok(()) => Stopped::Killed,
                Err(err) => Stopped::Failed(err),
            },
        }
    }

    /// "shop-engine exited (exit status: 1); its log is /x/engine.log".
    pub fn describe_exit(&self, status: std::io::Result<ExitStatus>) -> String {
        let how = match status {
            Ok(status) => format!("exited ({status})"),
            Err(err) => format!("could not be waited for ({err})"),
        };
        match &self.log {
            Some(log) => format!("{} {how}; its log is {}", self.name, log.display()),
            None => format!("{} {how}", self.name),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `lines` lines of the file at `path`, read from at most its last `max_bytes`.
pub fn tail_lines(path: &Path, lines: usize, max_bytes: u64) -> std::io::Result<String> {
    let text = read_end(path, max_bytes)?;
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    Ok(all[start..].join("\n"))
}

/// The last `max_bytes` of the file at `path`, lossily decoded; empty if it cannot be read.
pub fn tail_bytes(path: &Path, max_bytes: u64) -> String {
    read_end(path, max_bytes).unwrap_or_default()
}

fn read_end(path: &Path, max_bytes: u64) -> std::io::Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_keep_the_last_lines_within_the_byte_bound() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("engine.log");
        let text: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, &text)?;
        let tail = tail_lines(&log, 20, 16 * 1024)?;
        assert_eq!(tail.lines().count(), 20);
        assert!(tail.ends_with("line 100"));
        assert_eq!(tail_bytes(&log, 9), "line 100\n");
        assert_eq!(tail_bytes(&dir.path().join("missing"), 9), "");
        Ok(())
    }

    #[tokio::test]
    async fn a_child_that_exits_during_start_up_is_reported_in_one_line() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("false.log");
        let output = Output::LogFile { path: log.clone(), append: false };
        let mut process = Process::spawn("shop-engine", &mut Command::new("false"), &output)?;
        let health = Client::new(shop_client::Service::Engine, "127.0.0.1:1", shop_client::Options::default())?;
        let err = process.wait_ready(&health, Duration::from_secs(10)).await.err().ok_or("ready?")?;
        let text = err.to_string();
        assert!(text.starts_with("shop-engine exited (exit status: 1); its log is "), "{text}");
        assert!(text.ends_with("during start-up") && !text.contains('\n'), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn a_child_that_exits_while_another_process_answers_its_address_found_it_taken(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Another server on the child's address, naming a pid that is not the child's.
        let impostor = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = impostor.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = impostor.accept().await {
                let mut request = [0u8; 1024];
                let _ = connection.read(&mut request).await;
                let body = r#"{"pid":1}"#;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = connection.write_all(format!("{head}{body}").as_bytes()).await;
            }
        });
        let dir = tempfile::tempdir()?;
        let output = Output::LogFile { path: dir.path().join("worker.log"), append: false };
        // A child that fails to start after the health probe saw the impostor.
        let mut process = Process::spawn("shop-worker", Command::new("sh").args(["-c", "sleep 1; exit 1"]), &output)?;
        let health = Client::new(shop_client::Service::Engine, &address.to_string(), shop_client::Options::default())?;
        let err = process.wait_ready(&health, Duration::from_secs(10)).await.err().ok_or("ready?")?;
        assert!(matches!(err, Error::AddressTaken(_)), "{err:?}");
        let text = err.to_string();
        assert!(text.contains("another process (pid 1) answers") && !text.contains('\n'), "{text}");
        Ok(())
    }

    #[tokio::test]
    async fn signals_stop_and_continue_and_terminate_a_child() -> Result<(), Box<dyn std::error::Error>> {
        let mut process = Process::spawn("sleep", Command::new("sleep").arg("30"), &Output::Inherit)?;
        process.signal(Signal::Stop)?;
        process.signal(Signal::Cont)?;
        assert!(process.try_exit()?.is_none());
        let status = process.terminate(Duration::from_secs(10)).await?;
        assert!(!status.success());
        Ok(())
    }
}
