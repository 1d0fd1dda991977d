//! Error fingerprints: which parked and failed runs failed the same way. A fingerprint is a
//! digest of the workflow type, the phase (parked or failed) and the run's recorded reason
//! with everything that differs between runs of one failure (ids, numbers, uuids) replaced
//! by `#`. The reason is what the decider wrote where the run parked or failed (the step,
//! its error code and message), and it is kept in the run's summary, so a fingerprint is
//! computed from the summary alone: listing groups never replays a history.
//!
//! Pure functions only: this module must never read the store or a clock.

use crate::store::RunSummary;
use sha2::{Digest, Sha256};
use shop_types::api::WorkflowStatus;
use shop_types::redrive::FailurePhase;

/// Hex digits of a fingerprint: 64 bits of SHA-256, plenty for the groups one store holds.
pub const FINGERPRINT_HEX_LEN: usize = 16;
/// Shortest run of lowercase hex letters taken for an id even without a digit ("deadbeef").
const MIN_HEX_ID_LEN: usize = 8;

/// A run's failure, if it is parked or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub fingerprint: String,
    pub phase: FailurePhase,
    pub pattern: String,
    /// When it was seen: a failed run's end, a parked run's start (its summary records no
    /// park time).
    pub seen_ms: u64,
}

/// The failure of the run `summary` describes, or `None` when it is not FAILED.
pub fn of_summary(summary: &RunSummary) -> Option<Failure> {
    if summary.status != WorkflowStatus::Failed {
        return None;
    }
    let phase = if summary.closed_at_ms.is_some() { FailurePhase::Failed } else { FailurePhase::Parked };
    let reason = summary.reason.as_deref().unwrap_or("");
    let pattern = normalize(reason);
    Some(Failure {
        fingerprint: fingerprint(summary.workflow_type.as_str(), phase, &pattern),
        phase,
        pattern,
        seen_ms: summary.closed_at_ms.unwrap_or(summary.created_at_ms),
    })
}

/// The digest of a failure's parts: [`FINGERPRINT_HEX_LEN`] hex digits.
pub fn fingerprint(workflow_type: &str, phase: FailurePhase, pattern: &str) -> String {
    let phase = match phase {
        FailurePhase::Parked => "parked",
        FailurePhase::Failed => "failed",
    };
    let digest = Sha256::new()
        .chain_update(workflow_type)
        .chain_update([0])
        .chain_update(phase)
        .chain_update([0])
        .chain_update(pattern)
        .finalize();
    let mut hex = crate::auth::hex(&digest);
    hex.truncate(FINGERPRINT_HEX_LEN);
    hex
}

/// `reason` with every word that names one run replaced by `#`: a word (letters, digits,
/// `_` and `-`) holding a digit, unless it is an error code (`HTTP_503`: upper case, digits
/// and `_`, starting with a letter), and a long run of lowercase hex letters. Step names,
/// error codes and the words of a message stay.
pub fn normalize(reason: &str) -> String {
    let mut out = String::with_capacity(reason.len());
    let mut word = String::new();
    for c in reason.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
            word.push(c);
        } else {
            push_word(&mut out, &word);
            word.clear();
            out.push(c);
        }
    }
    push_word(&mut out, &word);
    out
}

fn push_word(out: &mut String, word: &str) {
    if names_one_run(word) {
        out.push('#');
    } else {
        out.push_str(word);
    }
}

fn names_one_run(word: &str) -> bool {
    let has_digit = word.bytes().any(|b| b.is_ascii_digit());
    let error_code = word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    let hex_id = word.len() >= MIN_HEX_ID_LEN && word.bytes().all(|b| matches!(b, b'a'..=b'f' | b'0'..=b'9'));
    (has_digit && !error_code) || hex_id
}

#[cfg(test)]
mod tests {
    use super::*;
    use shop_types::WorkflowType;

    fn parked(workflow_type: &str, reason: &str) -> RunSummary {
        RunSummary {
            workflow_type: WorkflowType::parse(workflow_type.to_owned()).expect("a valid type"),
            definition_version: 1,
            status: WorkflowStatus::Failed,
            created_at_ms: 5,
            closed_at_ms: None,
            reason: Some(reason.to_owned()),
            output: None,
        }
    }

    #[test]
    fn ids_numbers_and_uuids_are_stripped() {
        let reason = "charge_payment.compensation failed after 12 attempt(s): PROVIDER_DOWN: refund of order \
                      ord-7f3a2 (3f2b8c1e-9d4a-4e6b-8a7c-1b2c3d4e5f60) failed, key deadbeefcafe, 1.5s";
        assert_eq!(
            normalize(reason),
            "charge_payment.compensation failed after # attempt(s): PROVIDER_DOWN: refund of order \
             # (#) failed, key #, #.#"
        );
    }

    #[test]
    fn error_codes_with_digits_and_plain_words_stay() {
        assert_eq!(normalize("HTTP_503: upstream said no"), "HTTP_503: upstream said no");
        assert_eq!(normalize("reserve_stock timeout"), "reserve_stock timeout");
    }

    #[test]
    fn the_same_failure_of_two_runs_has_one_fingerprint() {
        let a =
            of_summary(&parked("order", "refund failed after 5 attempt(s): DOWN: order o-1 at 17")).expect("failed");
        let b =
            of_summary(&parked("order", "refund failed after 3 attempt(s): DOWN: order o-22 at 9")).expect("failed");
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), FINGERPRINT_HEX_LEN);
        assert_eq!(a.phase, FailurePhase::Parked);
    }

    #[test]
    fn type_phase_step_and_code_each_tell_failures_apart() {
        let base = of_summary(&parked("order", "refund failed: DOWN: x")).expect("failed").fingerprint;
        let other_type = of_summary(&parked("invoice", "refund failed: DOWN: x")).expect("failed").fingerprint;
        let other_step = of_summary(&parked("order", "release failed: DOWN: x")).expect("failed").fingerprint;
        let other_code = of_summary(&parked("order", "refund failed: TIMEOUT: x")).expect("failed").fingerprint;
        let mut failed = parked("order", "refund failed: DOWN: x");
        failed.closed_at_ms = Some(9);
        let failed = of_summary(&failed).expect("failed");
        assert_eq!((failed.phase, failed.seen_ms), (FailurePhase::Failed, 9));
        let all = [&base, &other_type, &other_step, &other_code, &failed.fingerprint];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn a_run_that_is_not_failed_has_no_fingerprint() {
        let mut running = parked("order", "x");
        running.status = WorkflowStatus::Running;
        assert_eq!(of_summary(&running), None);
    }
}
