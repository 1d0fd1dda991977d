//! What a process costs, read from /proc and the file system: memory, CPU time and disk
//! usage. Each figure is `None` when it cannot be read; this module must never fail a run.

use std::path::Path;

/// A memory figure of the process in KiB from /proc (`VmRSS:` now, `VmHWM:` its peak).
pub(super) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// CPU time (user + system) the process has used so far, in milliseconds, from /proc. CPU
/// per saga is steadier than throughput on a machine that is doing other work too.
pub(super) fn cpu_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 1000 / CLOCK_TICKS_PER_SECOND)
}

/// The kernel's USER_HZ, which /proc reports times in; 100 on every Linux we run on.
pub(super) const CLOCK_TICKS_PER_SECOND: u64 = 100;

/// Bytes the directory's files occupy on disk (allocated blocks, not apparent sizes).
pub(super) fn disk_usage(dir: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).ok()? {
            let entry = entry.ok()?;
            let metadata = entry.metadata().ok()?;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                total += metadata.blocks() * 512;
            }
        }
    }
    Some(total)
}
