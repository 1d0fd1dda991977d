//! Micro-benchmarks of the engine's pure hot path: the decider driving a whole order saga,
//! replaying a history, and the record codec. Run with `cargo bench -p shop-engine`.
//!
//! They measure CPU only (no I/O), so they show what a saga costs the core before sled and
//! HTTP are involved.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shop_engine::codec;
use shop_engine::decider::{self, Context, Input};
use shop_engine::definition::{self, Definition};
use shop_engine::state::WorkflowState;
use shop_types::history::Event;
use shop_types::{JsonText, WorkflowId};

const ORDER: &str = include_str!("../../workflows/order.toml");
const INPUT: &str = r#"{"orderId":"o-1","orderItems":[{"productId":1,"quantity":2}],"shippingAddress":"1 Main St","paymentMethod":"CREDIT_CARD"}"#;

/// Runs one confirmed order saga through the decider and returns its history.
fn run_saga(definition: &Definition, input: &JsonText) -> Vec<Event> {
    let ctx = Context::new(1_000, 10_000);
    let id = WorkflowId::parse("o-1").expect("valid id");
    let mut state = WorkflowState::new(id, definition, input.clone(), ctx.now_ms);
    let mut history = decider::start(definition, &mut state, input, ctx).events;
    let output = JsonText::parse(r#"{"totalCents":1999}"#).expect("valid json");
    while let Some(current) = state.current().cloned() {
        let (step, attempt) = (current.step, current.attempt);
        let started = Input::Started { step, attempt, worker: "w".parse().expect("valid") };
        history.extend(decider::decide(definition, &mut state, started, ctx).expect("starts").events);
        let completed = Input::Completed { step, attempt, output: output.clone() };
        history.extend(decider::decide(definition, &mut state, completed, ctx).expect("completes").events);
    }
    history
}

fn benches(c: &mut Criterion) {
    let definition = definition::parse("order.toml", ORDER).expect("order.toml is valid");
    let input = JsonText::parse(INPUT).expect("valid json");
    c.bench_function("decide a whole order saga", |b| b.iter(|| run_saga(black_box(&definition), &input)));

    let history = run_saga(&definition, &input);
    let id = WorkflowId::parse("o-1").expect("valid id");
    c.bench_function("replay a saga's history", |b| {
        b.iter(|| WorkflowState::replay(id.clone(), black_box(&definition), black_box(&history)).expect("replays"))
    });

    c.bench_function("encode a saga's events", |b| {
        b.iter(|| history.iter().map(|e| codec::encode(black_box(e)).expect("encodes").len()).sum::<usize>())
    });
    let encoded: Vec<Vec<u8>> = history.iter().map(|e| codec::encode(e).expect("encodes")).collect();
    c.bench_function("decode a saga's events", |b| {
        b.iter(|| {
            encoded.iter().map(|bytes| codec::decode::<Event>(black_box(bytes)).expect("decodes").seq).sum::<u64>()
        })
    });
}

criterion_group!(decider_benches, benches);
criterion_main!(decider_benches);
