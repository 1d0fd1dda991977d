//! The breaker's state machine at its edges: `min_calls`, a ratio exactly at the threshold,
//! the window sliding, half-open probes succeeding, failing and getting lost.

use super::circuit::{Breaker, CircuitState, Outcome, ProbeKey};
use crate::definition::CircuitConfig;
use shop_types::{StepRef, WorkflowId};

fn config() -> CircuitConfig {
    CircuitConfig { failure_ratio: 0.5, window_ms: 10_000, min_calls: 4, open_for_ms: 5_000, half_open_probes: 1 }
}

fn key(n: u32) -> ProbeKey {
    (WorkflowId::parse(format!("run-{n}")).expect("valid"), StepRef::forward(0), 1)
}

fn feed(breaker: &mut Breaker, outcomes: &[Outcome], at: u64) {
    for (i, outcome) in outcomes.iter().enumerate() {
        breaker.record(&key(100 + i as u32), *outcome, at);
    }
}

use Outcome::{Failure as F, Success as S};

#[test]
fn below_min_calls_it_stays_closed_however_many_fail() {
    let mut breaker = Breaker::new(config());
    feed(&mut breaker, &[F, F, F], 0);
    assert_eq!(breaker.state(), CircuitState::Closed, "3 calls < min_calls 4");
    let opened = breaker.record(&key(1), F, 0).expect("the 4th call opens it");
    assert_eq!((opened.from, opened.to, opened.open_until_ms), (CircuitState::Closed, CircuitState::Open, Some(5_000)));
    assert!(!breaker.allows());
}

#[test]
fn a_ratio_exactly_at_the_threshold_opens_and_just_below_does_not() {
    let mut breaker = Breaker::new(config());
    feed(&mut breaker, &[S, S, S, F, F], 0);
    assert_eq!(breaker.state(), CircuitState::Closed, "2 of 5 = 0.4 < 0.5");
    breaker.record(&key(1), F, 0);
    assert_eq!(breaker.state(), CircuitState::Open, "3 of 6 = 0.5, exactly the threshold");
}

#[test]
fn a_success_never_opens_it() {
    let mut breaker = Breaker::new(CircuitConfig { failure_ratio: 0.1, ..config() });
    feed(&mut breaker, &[F, F, F], 0);
    breaker.record(&key(1), S, 0);
    assert_eq!(breaker.state(), CircuitState::Closed, "only a failure trips it");
}

#[test]
fn the_window_slides_so_old_failures_stop_counting() {
    let mut breaker = Breaker::new(config());
    feed(&mut breaker, &[F, F, F], 0);
    // At 10_000 the three failures are exactly window_ms old: forgotten.
    breaker.record(&key(1), F, 10_000);
    assert_eq!(breaker.state(), CircuitState::Closed, "one call in the window");
    assert_eq!(breaker.view(10_000).calls, 1);
    let mut breaker = Breaker::new(config());
    feed(&mut breaker, &[F, F, F], 1);
    breaker.record(&key(1), F, 10_000);
    assert_eq!(breaker.state(), CircuitState::Open, "9_999 ms old: still in the window");
}

fn opened() -> Breaker {
    let mut breaker = Breaker::new(CircuitConfig { half_open_probes: 2, ..config() });
    feed(&mut breaker, &[F, F, F, F], 0);
    assert_eq!(breaker.state(), CircuitState::Open);
    breaker
}

#[test]
fn open_it_lets_nothing_through_until_open_for_then_half_open_lets_the_probes() {
    let mut breaker = opened();
    assert_eq!(breaker.tick(4_999), None, "one ms early");
    assert!(!breaker.allows());
    let half = breaker.tick(5_000).expect("at open_for");
    assert_eq!((half.from, half.to), (CircuitState::Open, CircuitState::HalfOpen));
    assert!(breaker.allows());
    breaker.handed_out(key(1));
    assert!(breaker.allows());
    breaker.handed_out(key(2));
    assert!(!breaker.allows(), "two probes, no more");
    let view = breaker.view(5_000);
    assert_eq!(view.handed_out.get(&CircuitState::HalfOpen), Some(&2));
    assert_eq!(view.handed_out.get(&CircuitState::Open), None);
}

#[test]
fn a_probe_that_succeeds_closes_it_with_an_empty_window() {
    let mut breaker = opened();
    breaker.tick(5_000);
    breaker.handed_out(key(1));
    breaker.record(&key(7), S, 5_001);
    assert_eq!(breaker.state(), CircuitState::HalfOpen, "an outcome of an attempt that is not a probe decides nothing");
    let closed = breaker.record(&key(1), S, 5_002).expect("the probe closes it");
    assert_eq!(closed.to, CircuitState::Closed);
    assert_eq!(breaker.view(5_002).calls, 0);
    feed(&mut breaker, &[F, F, F], 5_003);
    assert_eq!(breaker.state(), CircuitState::Closed, "it counts afresh");
}

#[test]
fn a_probe_that_fails_opens_it_again() {
    let mut breaker = opened();
    breaker.tick(5_000);
    breaker.handed_out(key(1));
    let reopened = breaker.record(&key(1), F, 6_000).expect("the probe opens it");
    assert_eq!((reopened.to, reopened.open_until_ms), (CircuitState::Open, Some(11_000)));
    let view = breaker.view(6_000);
    assert_eq!(view.transitions.get(&CircuitState::Open), Some(&2));
    assert_eq!(view.transitions.get(&CircuitState::HalfOpen), Some(&1));
}

#[test]
fn a_lost_probe_gives_its_place_back() {
    let mut breaker = Breaker::new(config());
    feed(&mut breaker, &[F, F, F, F], 0);
    breaker.tick(5_000);
    breaker.handed_out(key(1));
    assert!(!breaker.allows());
    breaker.release_lost_probes(|probe| *probe == key(2));
    assert!(!breaker.allows(), "key(1) is still out");
    breaker.release_lost_probes(|probe| *probe == key(1));
    assert!(breaker.allows(), "its run ended without an outcome: another probe may go");
}
