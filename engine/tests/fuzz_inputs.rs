//! Property-based fuzzing of everything that parses untrusted bytes: the history record
//! decoder, the definition parser and the API's request bodies and IDs. Each must return an
//! error for bad input, never panic, and never allocate more than its input justifies (the
//! decoder's allocation limit is tested with a huge length prefix).
//!
//! `PROPTEST_CASES` sets the number of cases per property (the default keeps CI quick); the
//! longer run quoted in docs/performance.md used `PROPTEST_CASES=100000`.

use proptest::prelude::*;
use shop_engine::decider::{self, Context};
use shop_engine::state::WorkflowState;
use shop_engine::{codec, definition};
use shop_types::api::{PollRequest, ReportBatchRequest, StartWorkflowRequest};
use shop_types::history::Event;
use shop_types::order::PlaceOrderRequest;
use shop_types::{JsonText, TaskToken, WorkflowId};

const ORDER: &str = include_str!("../../workflows/order.toml");
/// Cases per property when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 2_000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// A valid input with some bytes changed, cut short or extended: close to real input, so
/// the parsers get past their first check.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (
        proptest::collection::vec((0..len.max(1), any::<u8>()), 0..8),
        0..=len,
        proptest::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(move |(changes, cut, tail)| {
            let mut bytes = valid.clone();
            for (at, value) in changes {
                if let Some(byte) = bytes.get_mut(at) {
                    *byte = value;
                }
            }
            bytes.truncate(cut);
            bytes.extend(tail);
            bytes
        })
}

/// The first history record of a real order run.
fn valid_record() -> Vec<u8> {
    let definition = definition::parse("order.toml", ORDER).expect("order.toml is valid");
    let id = WorkflowId::parse("o-1").expect("valid id");
    let input = JsonText::parse(r#"{"orderId":"o-1"}"#).expect("valid json");
    let mut state = WorkflowState::new(id, &definition, input.clone(), 1);
    let events = decider::start(&definition, &mut state, &input, Context::new(1, 10_000)).events;
    codec::encode_events(&events).expect("encodes")
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_record_decoder_never_panics_on_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = codec::decode_events(&bytes);
        let _ = codec::decode::<Event>(&bytes);
    }

    #[test]
    fn the_record_decoder_never_panics_on_damaged_records(bytes in mutated(valid_record())) {
        let _ = codec::decode_events(&bytes);
    }

    #[test]
    fn the_definition_parser_never_panics_on_random_text(text in "\\PC{0,400}") {
        let _ = definition::parse("fuzz.toml", &text);
    }

    #[test]
    fn the_definition_parser_never_panics_on_damaged_definitions(bytes in mutated(ORDER.as_bytes().to_vec())) {
        if let Ok(text) = std::str::from_utf8(&bytes) {
            let _ = definition::parse("fuzz.toml", text);
        }
    }

    #[test]
    fn request_bodies_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = serde_json::from_slice::<PlaceOrderRequest>(&bytes);
        let _ = serde_json::from_slice::<StartWorkflowRequest>(&bytes);
        let _ = serde_json::from_slice::<PollRequest>(&bytes);
        let _ = serde_json::from_slice::<ReportBatchRequest>(&bytes);
    }

    #[test]
    fn ids_and_task_tokens_never_panic(text in "\\PC{0,200}") {
        let _ = WorkflowId::parse(text.clone());
        let _ = text.parse::<TaskToken>();
    }
}

#[test]
fn a_huge_length_prefix_is_refused_without_allocating_it() {
    // The current format, then a vector length of 2^62 as a varint (marker 0xfd, then eight
    // bytes): the decoder's size limit must refuse it before reserving that much.
    let mut bytes = vec![codec::FORMAT_VERSION, 0xfd];
    bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
    assert!(codec::decode_events(&bytes).is_err());
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let deep = format!("{{\"orderItems\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(serde_json::from_str::<PlaceOrderRequest>(&deep).is_err());
}
