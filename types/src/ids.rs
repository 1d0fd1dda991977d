//! Typed IDs that validate on parse, and the task token that names one activity attempt.
//!
//! IDs are `[A-Za-z0-9_.:-]{1,128}` and never contain `..`, so they are safe in URLs, keys
//! and file names. A bare `String` never crosses a module boundary where one of these fits.

use crate::limits::MAX_ID_LEN;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error("{kind} may only contain A-Z a-z 0-9 _ . : - (found {found:?})")]
    BadCharacter { kind: &'static str, found: char },
    #[error("{kind} may not contain '..'")]
    DotDot { kind: &'static str },
    #[error("malformed task token")]
    MalformedToken,
}

fn validate(kind: &'static str, text: &str) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if text.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: text.len() });
    }
    if let Some(found) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'))) {
        return Err(IdError::BadCharacter { kind, found });
    }
    if text.contains("..") {
        return Err(IdError::DotDot { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(text: impl Into<String>) -> Result<Self, IdError> {
                let text = text.into();
                validate($kind, &text)?;
                Ok($name(text))
            }

            pub fn as_str(&self) -> &str {
                &self.0
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
    };
}

id_type!(
    /// A workflow run's ID, unique in one engine (for orders, the order ID).
    WorkflowId,
    "workflow id"
);
id_type!(
    /// The name of a task queue that workers poll (e.g. `inventory`).
    QueueName,
    "queue name"
);

/// Which list of a definition a step belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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
