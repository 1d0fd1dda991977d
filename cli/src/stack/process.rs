//! One child process of a local stack: spawning it so that it ends with us, waiting until
//! *it* (not whoever else holds its port) answers `/healthz`, stopping it, and explaining
//! how it ended.
//!
//! Every child is spawned with `--exit-with-parent` (the caller's command line) and a piped
//! stdin whose write end the [`Process`] keeps: when `shopctl` ends for any reason, SIGKILL
//! included, the kernel closes it and the child shuts down gracefully. The handle also kills
//! the child when dropped, so an early return or a panic cannot orphan one. This module must
//! never call a child ready on the word of another process.

use super::{ChildOutput, StackOptions};
use crate::client::{Client, Service};
use crate::output;
use anyhow::{anyhow, Context as _, Result};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;
use tokio::process::{Child, Command};

/// Pause between two readiness probes of a starting child.
const HEALTH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a child has to finish in-flight work after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of a child's log shown when it fails while its output goes to a file.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a log to find those lines; a log can be large.
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// A running child. Its stdin's write end lives in `child` for as long as this handle.
pub(super) struct Process {
    pub(super) name: &'static str,
    pub(super) child: Child,
    log: Option<PathBuf>,
}

impl Process {
    pub(super) fn spawn(name: &'static str, command: &mut Command, options: &StackOptions) -> Result<Self> {
        let (stdout, stderr, log) = match options.output {
            ChildOutput::Inherit => {
                // A child's stdout is log output to us: it goes to our stderr, keeping our
                // stdout for data.
                let stderr =
                    std::io::stderr().as_fd().try_clone_to_owned().context("cannot share stderr with a child")?;
                (Stdio::from(stderr), Stdio::inherit(), None)
            }
            ChildOutput::LogFiles => {
                let path = options.data_dir.join(format!("{}.log", name.trim_start_matches("shop-")));
                let file = std::fs::File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
                let copy = file.try_clone().with_context(|| format!("cannot open {} twice", path.display()))?;
                (Stdio::from(file), Stdio::from(copy), Some(path))
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
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Process { name, child, log })
    }

    /// Waits until this child answers `/healthz` naming its own pid. Fails when it exits
    /// first (naming any other process that answered on its address meanwhile, the usual
    /// reason: an earlier stack still running) or when `timeout` passes.
    pub(super) async fn wait_healthy(&mut self, client: &Client, service: Service, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        // What answered /healthz that is not our child: its pid, if it named one.
        let mut other: Option<Option<u32>> = None;
        loop {
            if let Some(status) = self.child.try_wait().with_context(|| format!("cannot check on {}", self.name))? {
                let exited = self.describe_exit(Ok(status));
                return Err(match other {
                    Some(pid) => anyhow!("{exited} during start-up; {}", self.impostor(client, service, pid)),
                    None => anyhow!("{exited} during start-up"),
                });
            }
            match client.health_pid(service).await {
                Some(Some(pid)) if Some(pid) == self.child.id() => return Ok(()),
                Some(pid) => other = Some(pid),
                None => {}
            }
            if tokio::time::Instant::now() >= deadline {
                self.show_log_tail();
                let waited = output::duration(timeout);
                return Err(match other {
                    Some(pid) => {
                        anyhow!("{} did not start within {waited}; {}", self.name, self.impostor(client, service, pid))
                    }
                    None => {
                        anyhow!("{} did not answer /healthz at {} within {waited}", self.name, client.base(service))
                    }
                });
            }
            tokio::time::sleep(HEALTH_POLL_INTERVAL).await;
        }
    }

    /// "another process (pid 12) answers http://...: is an earlier shop-engine still running?"
    fn impostor(&self, client: &Client, service: Service, pid: Option<u32>) -> String {
        let who = match pid {
            Some(pid) => format!("another process (pid {pid})"),
            None => "another process".to_owned(),
        };
        format!("{who} answers {}healthz: is an earlier {} still running?", client.base(service), self.name)
    }

    /// SIGTERM, then up to [`STOP_GRACE`] for a clean exit, then SIGKILL.
    pub(super) async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let pid = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                // Failure means it has already exited; the wait below collects it.
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                output::note(&format!(
                    "{} did not stop within {} of SIGTERM; killing it",
                    self.name,
                    output::duration(STOP_GRACE)
                ));
                if let Err(err) = self.child.kill().await {
                    output::note(&format!("cannot kill {}: {err}", self.name));
                }
            }
        }
    }

    /// "shop-engine exited with exit status: 1", plus the end of its log when it has one.
    pub(super) fn describe_exit(&self, status: std::io::Result<ExitStatus>) -> String {
        self.show_log_tail();
        let how = match status {
            Ok(status) => format!("exited ({status})"),
            Err(err) => format!("could not be waited for ({err})"),
        };
        match &self.log {
            Some(log) => format!("{} {how}; its log is {}", self.name, log.display()),
            None => format!("{} {how}", self.name),
        }
    }

    /// Shows the last lines of the child's log on stderr, when its output went to a file.
    fn show_log_tail(&self) {
        let Some(log) = &self.log else { return };
        match read_tail(log) {
            Ok(tail) if !tail.is_empty() => {
                output::note(&format!("--- last lines of {} ---", log.display()));
                output::note(&tail);
            }
            Ok(_) => {}
            Err(err) => output::note(&format!("cannot read {}: {err:#}", log.display())),
        }
    }
}

fn read_tail(path: &Path) -> Result<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
    Ok(lines[start..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tails_keep_the_last_lines() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("engine.log");
        let text: String = (1..=100).map(|n| format!("line {n}\n")).collect();
        std::fs::write(&log, text)?;
        let tail = read_tail(&log)?;
        assert_eq!(tail.lines().count(), LOG_TAIL_LINES);
        assert!(tail.ends_with("line 100"));
        Ok(())
    }
}
