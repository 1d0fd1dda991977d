//! The output layer: the only code that writes to stdout or stderr.
//!
//! Data (tables, JSON, timelines) goes to stdout so it can be piped; progress and notes go
//! to stderr. Colour is used only on a terminal and never when `NO_COLOR` is set. This module
//! must never fetch anything or decide what to show, only how.

use anyhow::{Context as _, Result};
use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, UNIX_EPOCH};

/// Writes `text` and a newline to stdout.
pub fn line(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").context("cannot write to stdout")
}

/// Writes a JSON document to stdout, pretty, as `--json` promises.
pub fn json(value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).context("cannot format JSON")?;
    line(&text)
}

/// A progress message or a note, on stderr so it never mixes with data.
pub fn note(text: &str) {
    eprintln!("{text}");
}

/// Formats rows as aligned columns. Every cell is one line; the last column is not padded.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn with_header(header: &[&str]) -> Self {
        Table { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn without_header() -> Self {
        Table::default()
    }

    /// Adds a row. Control characters (a newline in an error message, an escape sequence
    /// in a name) become spaces, so every row stays one line and cannot restyle the terminal.
    pub fn row(&mut self, cells: Vec<String>) {
        let cells = cells
            .into_iter()
            .map(|cell| cell.chars().map(|c| if c.is_control() { ' ' } else { c }).collect())
            .collect();
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                if index > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if index + 1 < row.len() {
                    let pad = widths[index] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }

    pub fn print(&self) -> Result<()> {
        let mut out = std::io::stdout().lock();
        out.write_all(self.render().as_bytes()).context("cannot write to stdout")
    }
}

/// Whether to colour stdout: only a terminal, and never when `NO_COLOR` is set to anything.
pub fn colour_enabled() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Green for a good outcome, red for a bad one, plain when colour is off.
pub fn verdict(ok: bool, text: &str, colour: bool) -> String {
    match (colour, ok) {
        (false, _) => text.to_owned(),
        (true, true) => format!("\x1b[32m{text}\x1b[0m"),
        (true, false) => format!("\x1b[31m{text}\x1b[0m"),
    }
}

/// `12ms`, `1.204s`, `2m03.500s`: short enough for a column, precise to the millisecond.
pub fn duration(elapsed: Duration) -> String {
    shop_types::describe::millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}

/// A Unix-epoch millisecond timestamp as RFC 3339 UTC, to the second.
pub fn timestamp(at_ms: u64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Integer cents as a decimal amount (`1234` -> `12.34`); money is never a float.
pub fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02}", cents / 100, cents % 100)
}

/// Cuts `text` to at most `max` characters, marking the cut, so one long value cannot
/// break a table or a timeline line.
pub fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{kept}…")
}

/// An optional text, or `-` so a table column is never blank.
pub fn or_dash(text: Option<&str>) -> String {
    text.filter(|t| !t.is_empty()).unwrap_or("-").to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let mut table = Table::with_header(&["ID", "STATUS"]);
        table.row(vec!["a-long-id".into(), "RUNNING".into()]);
        table.row(vec!["b".into(), "-".into()]);
        assert_eq!(table.render(), "ID         STATUS\na-long-id  RUNNING\nb          -\n");
    }

    #[test]
    fn durations_read_at_every_scale() {
        assert_eq!(duration(Duration::from_millis(12)), "12ms");
        assert_eq!(duration(Duration::from_millis(1204)), "1.204s");
        assert_eq!(duration(Duration::from_millis(123_500)), "2m03.500s");
    }

    #[test]
    fn money_is_exact() {
        assert_eq!(money(1234), "12.34");
        assert_eq!(money(5), "0.05");
        assert_eq!(money(-250), "-2.50");
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
