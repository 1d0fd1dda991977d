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

/// Names one attempt of one step of one workflow. A report carrying a token for an attempt
/// that is no longer current is stale and is refused without changing anything.
///
/// Text form: `<workflow id>~<phase letter><index>~<attempt>`; `~` cannot occur in an ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskToken {
    pub workflow_id: WorkflowId,
    pub step: StepRef,
    pub attempt: u32,
}

impl fmt::Display for TaskToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}~{}{}~{}", self.workflow_id, self.step.phase.letter(), self.step.index, self.attempt)
    }
}

impl std::str::FromStr for TaskToken {
    type Err = IdError;
    fn from_str(text: &str) -> Result<Self, IdError> {
        let mut parts = text.split('~');
        let (Some(id), Some(step), Some(attempt), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(IdError::MalformedToken);
        };
        let workflow_id = WorkflowId::parse(id).map_err(|_| IdError::MalformedToken)?;
        let mut chars = step.chars();
        let phase = chars.next().and_then(StepPhase::from_letter).ok_or(IdError::MalformedToken)?;
        let index: u16 = chars.as_str().parse().map_err(|_| IdError::MalformedToken)?;
        let attempt: u32 = attempt.parse().map_err(|_| IdError::MalformedToken)?;
        Ok(TaskToken { workflow_id, step: StepRef { phase, index }, attempt })
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
        };
        let text = token.to_string();
        assert_eq!(text, "o-1~c3~7");
        assert_eq!(text.parse::<TaskToken>(), Ok(token));
        for bad in ["", "o-1", "o-1~x3~7", "o-1~c~7", "o-1~c3~", "o-1~c3~7~1", "a/b~f0~1"] {
            assert!(bad.parse::<TaskToken>().is_err(), "{bad}");
        }
    }
}
