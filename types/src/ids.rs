//! Typed IDs that validate on parse, and the task token that names one activity attempt.
//!
//! IDs are `[A-Za-z0-9_.:-]{1,128}` and never contain `..`, so they are safe in URLs, keys
//! and file names. A bare `String` never crosses a module boundary where one of these fits.
//! Names (workflow types, step names, activity names, worker ids) are newtypes too, each
//! with the rule that accepts everything the engine accepted before it had them. Every one
//! is a plain string on the wire and in storage (serde `transparent`): this module must
//! never change a byte of either.

use crate::limits::{MAX_ID_LEN, MAX_STEP_NAME_LEN};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {limit}")]
    TooLong { kind: &'static str, len: usize, limit: usize },
    #[error("{kind} is only white space")]
    Blank { kind: &'static str },
    #[error("{kind} may not contain control characters (found {found:?})")]
    ControlCharacter { kind: &'static str, found: char },
    #[error("{kind} may only contain A-Z a-z 0-9 _ . : - (found {found:?})")]
    BadCharacter { kind: &'static str, found: char },
    #[error("{kind} may not contain '..'")]
    DotDot { kind: &'static str },
    #[error("malformed task token")]
    MalformedToken,
}

/// The ID rule: the ID alphabet, at most [`MAX_ID_LEN`] bytes, no `..`.
fn validate(kind: &'static str, text: &str) -> Result<(), IdError> {
    validate_id(kind, text, MAX_ID_LEN)
}

/// The ID rule with another length limit.
fn validate_id(kind: &'static str, text: &str, limit: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > limit {
        return Err(IdError::TooLong { kind, len: text.len(), limit });
    }
    if let Some(found) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))) {
        return Err(IdError::BadCharacter { kind, found });
    }
    if text.contains("..") {
        return Err(IdError::DotDot { kind });
    }
    Ok(())
}

/// The step name rule: the ID alphabet, up to [`MAX_STEP_NAME_LEN`] (a declared step name
/// is an ID; its compensation is named `<step>.compensation`, which may be longer).
fn validate_step_name(kind: &'static str, text: &str) -> Result<(), IdError> {
    validate_id(kind, text, MAX_STEP_NAME_LEN)
}

/// The label rule, for names the engine only compares and shows (activity names, worker
/// ids): not empty, not only white space, at most [`MAX_ID_LEN`] bytes, no control
/// characters (they would forge log lines). Any other character is allowed, as it was.
fn validate_label(kind: &'static str, text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: text.len(), limit: MAX_ID_LEN });
    }
    if text.trim().is_empty() {
        return Err(IdError::Blank { kind });
    }
    if let Some(found) = text.chars().find(|c| c.is_control()) {
        return Err(IdError::ControlCharacter { kind, found });
    }
    Ok(())
}

/// The longest text a name of `kind` may be, as its rule checks it (for its OpenAPI schema).
#[cfg(feature = "openapi")]
fn max_len(kind: &str) -> usize {
    if kind == "step name" {
        MAX_STEP_NAME_LEN
    } else {
        MAX_ID_LEN
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        id_type!($(#[$doc])* $name, $kind, validate);
    };
    ($(#[$doc:meta])* $name:ident, $kind:literal, $validate:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                $validate($kind, &text)?;
                Ok($name(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Lookups by `&str` in maps keyed by the newtype: the hash and equality are the
        // inner string's, so `Borrow` is sound.
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(text: &str) -> Result<Self, IdError> {
                $name::parse(text)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                $name::parse(text).map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "openapi")]
        crate::openapi::string_schema!($name, concat!("A ", $kind, "."), Some(max_len($kind)));
    };
}

id_type!(
    /// A workflow run's ID, unique in one engine (for orders, the order ID).
    WorkflowId,
    "workflow id"
);
id_type!(
    /// A shop customer: the `sub` of a client's JWT, or `customerId` given by a trusted client;
    /// their orders and notifications are theirs.
    CustomerId,
    "customer id"
);
id_type!(
    /// The name of a task queue that workers poll (e.g. `inventory`).
    QueueName,
    "queue name"
);
id_type!(
    /// The name of a workflow definition, which its runs are started by (e.g. `order`).
    WorkflowType,
    "workflow type"
);
id_type!(
    /// A step's name in its definition (e.g. `charge_payment`, or
    /// `charge_payment.compensation` for its compensation).
    StepName,
    "step name",
    validate_step_name
);
id_type!(
    /// The activity a step runs, which a worker routes on (e.g. `inventory.reserve`).
    ActivityName,
    "activity name",
    validate_label
);
id_type!(
    /// Who polled a task, as the worker names itself (e.g. `host-1234`); recorded in
    /// `StepStarted` for operators.
    WorkerId,
    "worker id",
    validate_label
);

/// Which list of a definition a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum StepPhase {
    /// The forward steps, in order.
    Forward,
    /// The compensation of the forward step with the same index.
    Compensation,
    /// The steps run after compensation has finished.
    AfterCompensation,
}

impl StepPhase {
    fn letter(self) -> char {
        match self {
            StepPhase::Forward => 'f',
            StepPhase::Compensation => 'c',
            StepPhase::AfterCompensation => 'a',
        }
    }

    fn from_letter(letter: char) -> Option<Self> {
        match letter {
            'f' => Some(StepPhase::Forward),
            'c' => Some(StepPhase::Compensation),
            'a' => Some(StepPhase::AfterCompensation),
            _ => None,
        }
    }
}

/// One step of a definition: its phase and its index in that phase's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StepRef {
    pub phase: StepPhase,
    pub index: u16,
}

impl StepRef {
    pub fn forward(index: u16) -> Self {
        StepRef { phase: StepPhase::Forward, index }
    }
}

/// Bytes of a task token's MAC: 128 bits, so guessing one is hopeless.
pub const TASK_TOKEN_MAC_LEN: usize = 16;

/// Names one attempt of one step of one workflow, as handed to one worker. A report carrying
/// a token for an attempt that is no longer current is stale and is refused without
/// changing anything.
///
/// Text form: `<workflow id>~<phase letter><index>~<attempt>~<MAC>`; `~` cannot occur in an
/// ID. The MAC (32 lowercase hex digits) is the engine's proof that it handed this attempt
/// out, so only the holder of the hand-out can report it; the engine computes and checks
/// it, everyone else treats a token as opaque text. Parsing accepts a token without one
/// (the engine refuses it like a stale one), so an old or forged token gets one precise
/// answer rather than a parse error.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskToken {
    pub workflow_id: WorkflowId,
    pub step: StepRef,
    pub attempt: u32,
    pub mac: Option<[u8; TASK_TOKEN_MAC_LEN]>,
}

impl TaskToken {
    /// The text the MAC is computed over: the token without its MAC.
    pub fn signed_text(&self) -> String {
        format!("{}~{}{}~{}", self.workflow_id, self.step.phase.letter(), self.step.index, self.attempt)
    }
}

impl fmt::Display for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.signed_text())?;
        if let Some(mac) = &self.mac {
            f.write_str("~")?;
            for byte in mac {
                write!(f, "{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// Lowercase hex of exactly [`TASK_TOKEN_MAC_LEN`] bytes.
fn parse_mac(text: &str) -> Option<[u8; TASK_TOKEN_MAC_LEN]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * TASK_TOKEN_MAC_LEN {
        return None;
    }
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut mac = [0u8; TASK_TOKEN_MAC_LEN];
    for (byte, pair) in mac.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(mac)
}

impl std::str::FromStr for TaskToken {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        let mut parts = text.split('~');
        let (Some(id), Some(step), Some(attempt), mac, None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdError::MalformedToken);
        };
        let workflow_id = WorkflowId::parse(id).map_err(|_| IdError::MalformedToken)?;
        let mut chars = step.chars();
        let phase = chars.next().and_then(StepPhase::from_letter).ok_or(IdError::MalformedToken)?;
        let index: u16 = chars.as_str().parse().map_err(|_| IdError::MalformedToken)?;
        let attempt: u32 = attempt.parse().map_err(|_| IdError::MalformedToken)?;
        let mac = mac.map(|mac| parse_mac(mac).ok_or(IdError::MalformedToken)).transpose()?;
        Ok(TaskToken { workflow_id, step: StepRef { phase, index }, attempt, mac })
    }
}

impl Serialize for TaskToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TaskToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::COMPENSATION_SUFFIX;

    #[test]
    fn ids_accept_the_documented_alphabet_up_to_the_limit() {
        assert!(WorkflowId::parse("order-1_a.b:c").is_ok());
        assert!(WorkflowId::parse("x".repeat(MAX_ID_LEN)).is_ok());
        assert!(matches!(WorkflowId::parse("x".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong { .. })));
        assert!(matches!(WorkflowId::parse(""), Err(IdError::Empty { .. })));
        assert!(matches!(WorkflowId::parse("a/b"), Err(IdError::BadCharacter { .. })));
        assert!(matches!(WorkflowId::parse(".."), Err(IdError::DotDot { .. })));
        assert!(matches!(WorkflowId::parse("a%2F"), Err(IdError::BadCharacter { .. })));
    }

    #[test]
    fn names_accept_what_the_engine_accepted_before_them() {
        for name in ["order", "order-v2_a.b:c", &"x".repeat(MAX_ID_LEN)] {
            assert!(WorkflowType::parse(name).is_ok(), "{name}");
        }
        assert!(matches!(WorkflowType::parse("x".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong { .. })));
        assert!(matches!(WorkflowType::parse("a b"), Err(IdError::BadCharacter { .. })));

        // A declared step name is an ID; its compensation's name may be longer, to the limit.
        let longest_declared = "s".repeat(MAX_ID_LEN);
        let compensation = format!("{longest_declared}{COMPENSATION_SUFFIX}");
        assert_eq!(compensation.len(), MAX_STEP_NAME_LEN);
        assert!(StepName::parse(compensation.as_str()).is_ok());
        assert!(matches!(StepName::parse(format!("{compensation}x")), Err(IdError::TooLong { .. })));
        assert!(matches!(StepName::parse("a/b"), Err(IdError::BadCharacter { .. })));

        for name in ["inventory.reserve", "send email", "x.y/z", &"a".repeat(MAX_ID_LEN)] {
            assert!(ActivityName::parse(name).is_ok(), "{name}");
            assert!(WorkerId::parse(name).is_ok(), "{name}");
        }
        assert!(WorkerId::parse("host-1234").is_ok());
        assert!(matches!(ActivityName::parse(""), Err(IdError::Empty { .. })));
        assert!(matches!(ActivityName::parse("  "), Err(IdError::Blank { .. })));
        assert!(matches!(WorkerId::parse("a".repeat(MAX_ID_LEN + 1)), Err(IdError::TooLong { .. })));
        assert!(matches!(WorkerId::parse("w\nforged"), Err(IdError::ControlCharacter { .. })));
    }

    #[test]
    fn names_are_plain_strings_on_the_wire_and_in_storage() {
        let name = ActivityName::parse("inventory.reserve").expect("valid");
        assert_eq!(serde_json::to_string(&name).expect("json"), "\"inventory.reserve\"");
        let back: ActivityName = serde_json::from_str("\"inventory.reserve\"").expect("json");
        assert_eq!(back, name);
        assert!(serde_json::from_str::<WorkerId>("\"\"").is_err(), "validated on the way in too");
        for (text, bytes) in [
            ("order", bincode::serialize(&WorkflowType::parse("order").expect("valid"))),
            ("charge_payment", bincode::serialize(&StepName::parse("charge_payment").expect("valid"))),
            ("inventory.reserve", bincode::serialize(&name)),
            ("host-1", bincode::serialize(&WorkerId::parse("host-1").expect("valid"))),
        ] {
            assert_eq!(bytes.expect("bincode"), bincode::serialize(text).expect("bincode"), "{text}");
        }
    }

    #[test]
    fn task_tokens_round_trip_and_reject_garbage() {
        let token = TaskToken {
            workflow_id: WorkflowId::parse("o-1").expect("valid"),
            step: StepRef { phase: StepPhase::Compensation, index: 3 },
            attempt: 7,
            mac: None,
        };
        let text = token.to_string();
        assert_eq!(text, "o-1~c3~7");
        assert_eq!(text.parse::<TaskToken>(), Ok(token.clone()));
        let mut mac = [0u8; TASK_TOKEN_MAC_LEN];
        mac[0] = 0xab;
        mac[TASK_TOKEN_MAC_LEN - 1] = 0x09;
        let signed = TaskToken { mac: Some(mac), ..token };
        let text = signed.to_string();
        assert_eq!(text, "o-1~c3~7~ab000000000000000000000000000009");
        assert_eq!(text.parse::<TaskToken>(), Ok(signed));
        let short_mac = format!("o-1~c3~7~{}", "a".repeat(2 * TASK_TOKEN_MAC_LEN - 1));
        let long_mac = format!("o-1~c3~7~{}", "a".repeat(2 * TASK_TOKEN_MAC_LEN + 1));
        let upper_mac = format!("o-1~c3~7~{}", "A".repeat(2 * TASK_TOKEN_MAC_LEN));
        let extra = format!("{text}~1");
        for bad in ["", "o-1", "o-1~x3~7", "o-1~c~7", "o-1~c3~", "o-1~c3~7~1", "o-1~c3~7~", "a/b~f0~1"] {
            assert!(bad.parse::<TaskToken>().is_err(), "{bad}");
        }
        for bad in [short_mac, long_mac, upper_mac, extra] {
            assert!(bad.parse::<TaskToken>().is_err(), "{bad}");
        }
    }
}
