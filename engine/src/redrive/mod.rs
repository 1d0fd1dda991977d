//! Dead letters in bulk (issue 11): fingerprints of parked and failed runs
//! ([`fingerprint`]), their groups ([`scan`]) and redrive jobs, which resume many parked
//! runs through the core's one resume path, in the background, at a bounded rate.
//!
//! A job's targets are frozen when it starts. Each resumed run records `RunResumedBy` with
//! the job's reason and `by = "redrive:<job id>"`: the same event an operator's resume
//! writes (a redrive is exactly that resume, so replay, the console and the audit need no
//! new kind), naming the job, whose record says who started it. Jobs are written through
//! the core's commit path ([`Handle::write`]) when they start, every
//! [`PERSIST_EVERY`] runs and when they end. A restart reports a job that was running as
//! `interrupted`, never resumes it: a new job over the same group finds what is still parked.
//!
//! This module must never write workflow state itself (only the core resumes runs) nor read
//! a history.

pub mod fingerprint;
pub mod scan;

use crate::api::ApiError;
use crate::clock::Clock;
use crate::core::Handle;
use crate::store::{Store, WriteBatch};
use sha2::{Digest, Sha256};
use shop_types::redrive::{
    RedriveJob, RedriveRequest, RedriveState, RedriveTarget, TargetOutcome, DEFAULT_REDRIVE_RATE, MAX_REDRIVE_RATE,
    MAX_REDRIVE_REASON_BYTES, MAX_REDRIVE_TARGETS, MAX_RUNNING_REDRIVES, MAX_STORED_REDRIVES, MIN_REDRIVE_RATE,
};
use shop_types::WorkflowId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// A running job writes its record again after this many runs, so a crash loses at most
/// this many results (the runs' histories still name the job).
pub const PERSIST_EVERY: usize = 25;
/// How long `DELETE` waits for a job to stop (it finishes the resume in flight).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Invalid(String),
    #[error("the Idempotency-Key was used for another redrive request")]
    KeyReused,
    #[error("{0}")]
    TooMany(String),
    #[error("no redrive job {0}")]
    NotFound(String),
    /// What the store or the core answered, as the API reports it.
    #[error("{}", .0.message)]
    Api(ApiError),
}

impl From<ApiError> for Error {
    fn from(error: ApiError) -> Self {
        Error::Api(error)
    }
}

struct Entry {
    job: RedriveJob,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

/// The engine's redrive jobs: every stored one in memory (at most [`MAX_STORED_REDRIVES`]).
pub struct Redrives {
    core: Handle,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    /// Records each resume's span in its run's trace (off: nothing).
    tracer: shop_telemetry::Tracer,
    jobs: Mutex<BTreeMap<String, Entry>>,
}

impl Redrives {
    /// Loads the stored jobs; one that was running is reported as interrupted.
    pub fn load(
        core: Handle,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        tracer: shop_telemetry::Tracer,
    ) -> Result<Arc<Redrives>, crate::store::Error> {
        let mut jobs = BTreeMap::new();
        for mut job in store.redrives()? {
            if job.state == RedriveState::Running {
                job.state = RedriveState::Interrupted;
            }
            let (stop, _) = watch::channel(true);
            let (_, done) = watch::channel(true);
            jobs.insert(job.id.clone(), Entry { job, stop, done });
        }
        Ok(Arc::new(Redrives { core, store, clock, tracer, jobs: Mutex::new(jobs) }))
    }

    pub fn get(&self, id: &str) -> Option<RedriveJob> {
        self.lock().get(id).map(|entry| entry.job.clone())
    }

    /// Starts a job for `request` keyed by `key` (or returns the one that key started, with
    /// `false`). A dry run resolves its targets, changes nothing and keeps nothing.
    pub async fn start(
        self: &Arc<Self>,
        key: &str,
        request: RedriveRequest,
        by: String,
    ) -> Result<(RedriveJob, bool), Error> {
        let rate = check(&request)?;
        let id = format!("rd-{}", digest(key.as_bytes()));
        let request_digest = digest(&serde_json::to_vec(&request).map_err(|e| Error::Invalid(e.to_string()))?);
        if let Some(existing) = self.get(&id) {
            if existing.request_digest != request_digest {
                return Err(Error::KeyReused);
            }
            return Ok((existing, false));
        }
        let targets = self.targets(&request)?;
        let mut job = RedriveJob {
            id: id.clone(),
            state: RedriveState::Running,
            reason: request.reason.clone(),
            by,
            dry_run: request.dry_run,
            rate,
            created_at_ms: self.clock.now_ms(),
            ended_at_ms: None,
            request_digest,
            targets: targets.into_iter().map(|id| RedriveTarget { id, outcome: TargetOutcome::Pending }).collect(),
        };
        if request.dry_run {
            for target in &mut job.targets {
                target.outcome = self.dry_outcome(&target.id)?;
            }
            job.state = RedriveState::Completed;
            job.ended_at_ms = Some(self.clock.now_ms());
            return Ok((job, true));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = watch::channel(false);
        {
            let mut jobs = self.lock();
            if let Some(entry) = jobs.get(&id) {
                return Ok((entry.job.clone(), false));
            }
            let running = jobs.values().filter(|e| e.job.state == RedriveState::Running).count();
            if running >= MAX_RUNNING_REDRIVES {
                return Err(Error::TooMany(format!("{MAX_RUNNING_REDRIVES} redrive jobs are running already")));
            }
            if jobs.len() >= MAX_STORED_REDRIVES {
                return Err(Error::TooMany(format!("the engine keeps {MAX_STORED_REDRIVES} redrive jobs already")));
            }
            jobs.insert(id.clone(), Entry { job: job.clone(), stop: stop_tx, done: done_rx });
        }
        if let Err(error) = self.persist(&job).await {
            self.lock().remove(&id);
            return Err(error);
        }
        let redrives = Arc::clone(self);
        tokio::spawn(async move {
            redrives.run(id, stop_rx).await;
            let _ = done_tx.send(true);
        });
        Ok((job, true))
    }

    /// Stops job `id` (the resume in flight finishes) and returns it as it ended.
    pub async fn stop(&self, id: &str) -> Result<RedriveJob, Error> {
        let mut done = {
            let jobs = self.lock();
            let entry = jobs.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))?;
            let _ = entry.stop.send(true);
            entry.done.clone()
        };
        let _ = tokio::time::timeout(STOP_WAIT, done.wait_for(|done| *done)).await;
        self.get(id).ok_or_else(|| Error::NotFound(id.to_owned()))
    }

    /// Resumes the job's targets one after the other, [`RedriveJob::rate`] a second.
    async fn run(&self, id: String, mut stop: watch::Receiver<bool>) {
        let Some(job) = self.get(&id) else { return };
        let pause = Duration::from_millis(1_000 / u64::from(job.rate.max(1)));
        let by = format!("redrive:{id}");
        let mut stopped = false;
        for (i, target) in job.targets.iter().enumerate() {
            if i > 0 {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stop| *stop) => {}
                }
            }
            if *stop.borrow() {
                stopped = true;
                break;
            }
            let started_ms = self.clock.now_ms();
            let outcome = match self.core.resume(target.id.clone(), job.reason.clone(), by.clone()).await {
                Ok(()) => {
                    let ended_ms = self.clock.now_ms();
                    crate::trace::record_resume(
                        &self.tracer,
                        self.store.as_ref(),
                        &target.id,
                        started_ms,
                        ended_ms,
                        None,
                    );
                    TargetOutcome::Resumed
                }
                Err(error) => TargetOutcome::Skipped { code: ApiError::from(error).code.to_owned() },
            };
            let snapshot = self.update(&id, |job| job.targets[i].outcome = outcome);
            if (i + 1) % PERSIST_EVERY == 0 {
                self.persist_logged(snapshot).await;
            }
        }
        let now = self.clock.now_ms();
        let snapshot = self.update(&id, |job| {
            job.state = if stopped { RedriveState::Stopped } else { RedriveState::Completed };
            job.ended_at_ms = Some(now);
        });
        self.persist_logged(snapshot).await;
    }

    fn update(&self, id: &str, change: impl FnOnce(&mut RedriveJob)) -> Option<RedriveJob> {
        let mut jobs = self.lock();
        let entry = jobs.get_mut(id)?;
        change(&mut entry.job);
        Some(entry.job.clone())
    }

    async fn persist(&self, job: &RedriveJob) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        batch.put_redrive(job).map_err(ApiError::from)?;
        self.core.write(batch).await.map_err(ApiError::from)?;
        Ok(())
    }

    /// A progress write that fails leaves the job running: its runs' histories name it.
    async fn persist_logged(&self, job: Option<RedriveJob>) {
        if let Some(job) = job {
            if let Err(error) = self.persist(&job).await {
                tracing::warn!(job = %job.id, %error, "writing a redrive job failed");
            }
        }
    }

    /// The runs `request` names, frozen now.
    fn targets(&self, request: &RedriveRequest) -> Result<Vec<WorkflowId>, Error> {
        let limit = request.max.map_or(MAX_REDRIVE_TARGETS, |max| max as usize);
        let store_error = |e: crate::store::Error| Error::Api(ApiError::from(e));
        match (&request.group, &request.workflow_type, &request.ids) {
            (Some(group), None, None) => {
                scan::parked(self.store.as_ref(), limit, |_, failure| &failure.fingerprint == group)
                    .map_err(store_error)
            }
            (None, Some(wanted), None) => {
                scan::parked(self.store.as_ref(), limit, |summary, _| summary.workflow_type.as_str() == wanted)
                    .map_err(store_error)
            }
            (None, None, Some(ids)) => {
                let mut seen = std::collections::BTreeSet::new();
                Ok(ids.iter().filter(|id| seen.insert(*id)).take(limit).cloned().collect())
            }
            _ => Err(Error::Invalid("name exactly one of group, workflow_type and ids".into())),
        }
    }

    fn dry_outcome(&self, id: &WorkflowId) -> Result<TargetOutcome, Error> {
        let summary = self.store.run(id).map_err(ApiError::from)?;
        let code = match summary {
            None => "NOT_FOUND",
            Some(s) => match fingerprint::of_summary(&s).map(|f| f.phase) {
                Some(shop_types::redrive::FailurePhase::Parked) => return Ok(TargetOutcome::WouldResume),
                _ if s.closed_at_ms.is_some() => "ALREADY_FINISHED",
                _ => "NOT_PARKED",
            },
        };
        Ok(TargetOutcome::Skipped { code: code.to_owned() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding it cannot leave a job half-changed: every change is one assignment.
        self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Checks a request's reason, rate and count; returns its rate.
fn check(request: &RedriveRequest) -> Result<u32, Error> {
    let reason = request.reason.trim();
    if reason.is_empty() || reason.len() > MAX_REDRIVE_REASON_BYTES {
        return Err(Error::Invalid(format!("a redrive needs a reason of 1 to {MAX_REDRIVE_REASON_BYTES} bytes")));
    }
    let rate = request.rate.unwrap_or(DEFAULT_REDRIVE_RATE);
    if !(MIN_REDRIVE_RATE..=MAX_REDRIVE_RATE).contains(&rate) {
        return Err(Error::Invalid(format!("rate must be {MIN_REDRIVE_RATE} to {MAX_REDRIVE_RATE} runs a second")));
    }
    if let Some(max) = request.max {
        if max == 0 || max as usize > MAX_REDRIVE_TARGETS {
            return Err(Error::Invalid(format!("max must be 1 to {MAX_REDRIVE_TARGETS}")));
        }
    }
    if request.ids.as_ref().is_some_and(|ids| ids.len() > MAX_REDRIVE_TARGETS) {
        return Err(Error::Invalid(format!("a redrive names at most {MAX_REDRIVE_TARGETS} ids")));
    }
    Ok(rate)
}

fn digest(bytes: &[u8]) -> String {
    let mut hex = crate::auth::hex(&Sha256::digest(bytes));
    hex.truncate(fingerprint::FINGERPRINT_HEX_LEN);
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> RedriveRequest {
        RedriveRequest { group: Some("ab".into()), reason: "fixed".into(), ..RedriveRequest::default() }
    }

    #[test]
    fn limits_are_checked_at_their_edges() {
        assert_eq!(check(&request()).expect("valid"), DEFAULT_REDRIVE_RATE);
        let with = |f: fn(&mut RedriveRequest)| {
            let mut r = request();
            f(&mut r);
            check(&r)
        };
        assert_eq!(with(|r| r.rate = Some(MIN_REDRIVE_RATE)).expect("valid"), MIN_REDRIVE_RATE);
        assert_eq!(with(|r| r.rate = Some(MAX_REDRIVE_RATE)).expect("valid"), MAX_REDRIVE_RATE);
        assert!(with(|r| r.rate = Some(MIN_REDRIVE_RATE - 1)).is_err());
        assert!(with(|r| r.rate = Some(MAX_REDRIVE_RATE + 1)).is_err());
        assert!(with(|r| r.max = Some(MAX_REDRIVE_TARGETS as u32)).is_ok());
        assert!(with(|r| r.max = Some(MAX_REDRIVE_TARGETS as u32 + 1)).is_err());
        assert!(with(|r| r.max = Some(0)).is_err());
        assert!(with(|r| r.reason = " ".into()).is_err());
        assert!(with(|r| r.reason = "x".repeat(MAX_REDRIVE_REASON_BYTES)).is_ok());
        assert!(with(|r| r.reason = "x".repeat(MAX_REDRIVE_REASON_BYTES + 1)).is_err());
    }
}
