//! `shopctl bench --scrape-metrics 1s`: a Prometheus-like scraper reads `GET /metrics` of the
//! engine and of every worker once per interval while the benchmark runs, so the report says
//! what being scraped costs (run it back to back with and without) and what one scrape costs
//! (its time and size).
//!
//! Each target is scraped in turn, as Prometheus does per target, never two scrapes of one
//! target at once: a scrape slower than the interval delays the next. It measures and
//! reports; it never asserts a timing, and a failed scrape is counted, not fatal.

use super::drive::{micros, round};
use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use shop_client::Method;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The shortest interval accepted: below it the scraper is a load test, not a scraper.
pub(super) const MIN_SCRAPE_INTERVAL: Duration = Duration::from_millis(100);

/// Parses `--scrape-metrics`: a duration (`1s`, `500ms`) of at least [`MIN_SCRAPE_INTERVAL`].
pub(super) fn parse_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e}"))?;
    if interval < MIN_SCRAPE_INTERVAL {
        return Err(format!("at least {}ms", MIN_SCRAPE_INTERVAL.as_millis()));
    }
    Ok(interval)
}

/// One scraped service: its name in the report and its client (with the admin credential).
pub(super) struct ScrapeTarget {
    pub(super) name: String,
    pub(super) client: shop_client::Client,
}

/// What one target's scrapes measured.
#[derive(Default)]
struct Tally {
    scrapes: u64,
    failures: u64,
    bytes: u64,
    took_us: Vec<u64>,
}

/// The scraper running in the background until [`Scraper::finish`].
pub(super) struct Scraper {
    task: JoinHandle<Vec<(String, Tally)>>,
    stop: tokio::sync::watch::Sender<bool>,
    interval: Duration,
}

impl Scraper {
    /// Starts scraping `targets` every `interval`, the first scrape at once.
    pub(super) fn start(targets: Vec<ScrapeTarget>, interval: Duration) -> Scraper {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tallies: Vec<(String, Tally)> =
                targets.iter().map(|t| (t.name.clone(), Tally::default())).collect();
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stopped.changed() => break,
                }
                for (target, (_, tally)) in targets.iter().zip(tallies.iter_mut()) {
                    let begun = Instant::now();
                    let answer = target.client.send(Method::GET, "/metrics", None, Vec::new(), &[]).await;
                    tally.scrapes += 1;
                    match answer {
                        Ok(reply) if reply.status.is_success() => {
                            tally.bytes += reply.body.len() as u64;
                            tally.took_us.push(micros(begun.elapsed()));
                        }
                        _ => tally.failures += 1,
                    }
                }
            }
            tallies
        });
        Scraper { task, stop, interval }
    }

    /// Stops scraping and reports, per target: scrapes, failures, mean size, p50 and max
    /// time of one scrape.
    pub(super) async fn finish(self) -> Result<serde_json::Value> {
        // The task ends at its next select; a send error means it already ended.
        let _ = self.stop.send(true);
        let tallies = self.task.await.context("the metrics scraper panicked")?;
        let mut targets = serde_json::Map::new();
        for (name, tally) in tallies {
            let mut took = Histogram::<u64>::new(3).context("cannot create a histogram")?;
            for us in &tally.took_us {
                took.record((*us).max(1)).context("scrape time out of range")?;
            }
            let ok = tally.took_us.len().max(1) as u64;
            let ms = |us: u64| round(us as f64 / 1000.0, 3);
            targets.insert(
                name,
                serde_json::json!({
                    "scrapes": tally.scrapes,
                    "failures": tally.failures,
                    "mean_bytes": tally.bytes / ok,
                    "p50_ms": ms(took.value_at_quantile(0.5)),
                    "max_ms": ms(took.max()),
                }),
            );
        }
        Ok(serde_json::json!({
            "scrape_interval_ms": u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            "scraped": targets,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_is_a_duration_of_at_least_the_minimum() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("100ms"), Ok(MIN_SCRAPE_INTERVAL));
        assert!(parse_interval("99ms").is_err());
        assert!(parse_interval("often").is_err());
    }
}
