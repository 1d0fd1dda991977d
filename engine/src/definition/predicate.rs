//! Predicates as data: `{ path = <JSON Pointer>, equals | not_equals | in | exists | gt | lt }`
//! over a run's context, and the context's shape.
//!
//! The context a pointer reads is one JSON object:
//! `{"input": <the run's input>, "steps": {"<step name>": <its output>, ...}}`, where `steps`
//! holds the output of every forward step completed so far (an activity's result, a wait's
//! consumed signal payload). So `/input/paymentMethod` reads the input and
//! `/steps/await_3ds/status` an earlier output.
//!
//! This module owns parsing and evaluating predicates and pointers. It must never be called
//! on replay: the decider evaluates a predicate once and records the outcome as an event.

use serde::Deserialize;
use serde_json::Value;
use std::cmp::Ordering;

/// Longest JSON Pointer a definition may use, in bytes.
pub const MAX_POINTER_BYTES: usize = 256;
/// Most values in one `in = [...]` list.
pub const MAX_IN_VALUES: usize = 64;

/// A test of the value at `path`.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    pub path: String,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    /// `exists = true`: the path resolves; `exists = false`: it does not.
    Exists(bool),
    /// Greater than a number: integers compare exactly, not through `f64` (which cannot
    /// tell 2^53 from 2^53 + 1).
    Gt(serde_json::Number),
    Lt(serde_json::Number),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPredicate {
    path: String,
    equals: Option<toml::Value>,
    not_equals: Option<toml::Value>,
    #[serde(rename = "in")]
    in_: Option<Vec<toml::Value>>,
    exists: Option<bool>,
    gt: Option<toml::Value>,
    lt: Option<toml::Value>,
}

impl RawPredicate {
    /// Checks the pointer and that exactly one test is given. `step_names` are the names a
    /// `/steps/<name>` pointer may read.
    pub(super) fn resolve(&self, step_names: &dyn Fn(&str) -> bool) -> Result<Predicate, String> {
        check_pointer(&self.path, step_names)?;
        let json = |v: &toml::Value| serde_json::to_value(v).map_err(|e| format!("predicate value: {e}"));
        let mut tests = Vec::new();
        if let Some(v) = &self.equals {
            tests.push(Test::Equals(json(v)?));
        }
        if let Some(v) = &self.not_equals {
            tests.push(Test::NotEquals(json(v)?));
        }
        if let Some(values) = &self.in_ {
            if values.is_empty() || values.len() > MAX_IN_VALUES {
                return Err(format!("`in` needs 1 to {MAX_IN_VALUES} values"));
            }
            tests.push(Test::In(values.iter().map(json).collect::<Result<_, _>>()?));
        }
        if let Some(b) = self.exists {
            tests.push(Test::Exists(b));
        }
        let number = |v: &toml::Value, test: &str| match v {
            toml::Value::Integer(i) => Ok(serde_json::Number::from(*i)),
            toml::Value::Float(f) => {
                serde_json::Number::from_f64(*f).ok_or_else(|| format!("`{test}` needs a finite number"))
            }
            _ => Err(format!("`{test}` needs a number")),
        };
        if let Some(v) = &self.gt {
            tests.push(Test::Gt(number(v, "gt")?));
        }
        if let Some(v) = &self.lt {
            tests.push(Test::Lt(number(v, "lt")?));
        }
        if tests.len() != 1 {
            return Err("a predicate has a path and exactly one of equals, not_equals, in, exists, gt, lt".into());
        }
        Ok(Predicate { path: self.path.clone(), test: tests.remove(0) })
    }
}

/// A pointer must read the context: `/input` or below, or `/steps/<a step of this
/// definition>` or below.
pub(super) fn check_pointer(path: &str, step_names: &dyn Fn(&str) -> bool) -> Result<(), String> {
    if path.len() > MAX_POINTER_BYTES {
        return Err(format!("pointer {path:?} is longer than {MAX_POINTER_BYTES} bytes"));
    }
    let mut parts = path.split('/');
    let (Some(""), Some(root)) = (parts.next(), parts.next()) else {
        return Err(format!("pointer {path:?} must start with /input or /steps/<step>"));
    };
    match root {
        "input" => Ok(()),
        "steps" => match parts.next() {
            Some(name) if step_names(name) => Ok(()),
            Some(name) => Err(format!("pointer {path:?} reads step {name:?}, which this definition does not have")),
            None => Err(format!("pointer {path:?} must name a step: /steps/<step>/...")),
        },
        _ => Err(format!("pointer {path:?} must start with /input or /steps/<step>")),
    }
}

impl Predicate {
    /// Whether the predicate holds over `context` (see the module doc for its shape).
    pub fn holds(&self, context: &Value) -> bool {
        let found = context.pointer(&self.path);
        match (&self.test, found) {
            (Test::Exists(want), found) => found.is_some() == *want,
            (_, None) => false,
            (Test::Equals(v), Some(found)) => json_eq(found, v),
            (Test::NotEquals(v), Some(found)) => !json_eq(found, v),
            (Test::In(values), Some(found)) => values.iter().any(|v| json_eq(found, v)),
            (Test::Gt(n), Some(Value::Number(found))) => compare(found, n) == Some(Ordering::Greater),
            (Test::Lt(n), Some(Value::Number(found))) => compare(found, n) == Some(Ordering::Less),
            (Test::Gt(_) | Test::Lt(_), Some(_)) => false,
        }
    }
}

/// Equality where numbers compare by value (TOML's `1` and JSON's `1.0` are the same), and
/// exactly (see [`compare`]).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => compare(x, y) == Some(Ordering::Equal),
        _ => a == b,
    }
}

/// Orders two JSON numbers exactly: integers (i64 or u64) as integers; a float against an
/// integer as floats, then, when those are equal (so the float is integral and in range),
/// as integers again. `None` only for a NaN, which JSON cannot hold.
fn compare(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    let int = |n: &serde_json::Number| n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from));
    match (int(a), int(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        (Some(x), None) => compare_int_float(x, b.as_f64()?),
        (None, Some(y)) => compare_int_float(y, a.as_f64()?).map(Ordering::reverse),
        (None, None) => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// `int` against `float`, exactly.
fn compare_int_float(int: i128, float: f64) -> Option<Ordering> {
    // Rounded, the integer may look equal to a float it is not; only then is the float
    // integral and within i128's range, so the cast back is exact.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    match (int as f64).partial_cmp(&float)? {
        Ordering::Equal => Some(int.cmp(&(float as i128))),
        other => Some(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(path: &str, test: Test) -> Predicate {
        Predicate { path: path.into(), test }
    }

    #[test]
    fn every_test_evaluates_over_the_context() {
        let ctx = json!({"input": {"m": "CARD_3DS", "n": 5}, "steps": {"a": {"ok": true}}});
        assert!(p("/input/m", Test::Equals(json!("CARD_3DS"))).holds(&ctx));
        assert!(p("/input/m", Test::NotEquals(json!("X"))).holds(&ctx));
        assert!(!p("/input/missing", Test::NotEquals(json!("X"))).holds(&ctx), "a missing value never matches");
        assert!(p("/input/m", Test::In(vec![json!("A"), json!("CARD_3DS")])).holds(&ctx));
        assert!(p("/steps/a/ok", Test::Exists(true)).holds(&ctx));
        assert!(p("/steps/b", Test::Exists(false)).holds(&ctx));
        assert!(p("/input/n", Test::Gt(4.into())).holds(&ctx) && !p("/input/n", Test::Gt(5.into())).holds(&ctx));
        assert!(p("/input/n", Test::Lt(6.into())).holds(&ctx) && !p("/input/m", Test::Lt(6.into())).holds(&ctx));
        let half = |f: f64| Test::Gt(serde_json::Number::from_f64(f).expect("finite"));
        assert!(p("/input/n", half(4.5)).holds(&ctx) && !p("/input/n", half(5.5)).holds(&ctx));
        assert!(p("/input/n", Test::Equals(json!(5.0))).holds(&ctx));
    }

    /// Integers past 2^53 are not all `f64`s: compared through `f64`, 2^53 + 1 is neither
    /// greater than 2^53 nor different from it.
    #[test]
    fn integers_compare_exactly() {
        let big: i64 = 1 << 53;
        let ctx = json!({"input": {"n": big + 1, "u": u64::MAX, "f": 9007199254740992.0}});
        assert!(p("/input/n", Test::Gt(big.into())).holds(&ctx));
        assert!(!p("/input/n", Test::Lt((big + 1).into())).holds(&ctx));
        assert!(p("/input/n", Test::Lt((big + 2).into())).holds(&ctx));
        assert!(!p("/input/n", Test::Equals(json!(big))).holds(&ctx));
        assert!(p("/input/n", Test::NotEquals(json!(big))).holds(&ctx));
        assert!(p("/input/n", Test::Equals(json!(big + 1))).holds(&ctx));
        assert!(p("/input/u", Test::Gt((u64::MAX - 1).into())).holds(&ctx), "u64 past i64::MAX");
        assert!(p("/input/f", Test::Equals(json!(big))).holds(&ctx), "2^53 as a float is 2^53");
        assert!(p("/input/n", Test::Gt(serde_json::Number::from_f64(9007199254740992.0).expect("finite"))).holds(&ctx));
    }

    #[test]
    fn a_toml_gt_keeps_an_integer_exact() {
        let raw: RawPredicate = toml::from_str("path = \"/input/n\"\ngt = 9007199254740992").expect("parses");
        let predicate = raw.resolve(&|_| true).expect("resolves");
        assert_eq!(predicate.test, Test::Gt((1i64 << 53).into()));
        assert!(predicate.holds(&json!({"input": {"n": (1i64 << 53) + 1}})));
        let text: RawPredicate = toml::from_str("path = \"/input/n\"\ngt = \"5\"").expect("parses");
        assert!(text.resolve(&|_| true).is_err(), "gt needs a number");
    }

    #[test]
    fn pointers_must_read_the_context() {
        let names = |n: &str| n == "a";
        assert!(check_pointer("/input", &names).is_ok());
        assert!(check_pointer("/steps/a/x", &names).is_ok());
        assert!(check_pointer("/steps/b/x", &names).is_err());
        assert!(check_pointer("input/x", &names).is_err());
        assert!(check_pointer("/other", &names).is_err());
        assert!(check_pointer("/steps", &names).is_err());
        let long = format!("/input/{}", "x".repeat(MAX_POINTER_BYTES));
        assert!(check_pointer(&long, &names).is_err());
        assert!(check_pointer(&long[..MAX_POINTER_BYTES], &names).is_ok(), "the limit itself is allowed");
    }
}
