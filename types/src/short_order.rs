//! Order v2 with short waits: the variant that `shopctl demo` and the end-to-end tests
//! register next to the production definition, so a 3-D Secure or bank-transfer timeout is
//! seen in seconds rather than in 15 minutes or 3 days.
//!
//! It is built from the production text (`workflows/order-v2.toml`, passed in) by replacing
//! exactly the version, the two waits' timeouts and the cancel window, each of which must
//! appear exactly once: a change to the production file that moves one of them makes this an
//! error instead of a variant that silently keeps a production timeout. This module must
//! never hold a definition of its own, nor be used to change what production runs.

/// What the variant changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortOrderV2<'a> {
    /// The version it is registered as: above every production version, so new orders
    /// start on it.
    pub version: u32,
    /// The timeout of both payment waits (3-D Secure and bank transfer), e.g. `"3s"`.
    pub wait_timeout: &'a str,
    /// The cancel window's durable sleep (`"0s"` in production), e.g. `"2s"`.
    pub cancel_window: &'a str,
}

/// The production text of order v2 did not have the shape the variant replaces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order v2's text has {found} occurrences of `{needle}`, not exactly 1: the short variant cannot be built")]
pub struct VariantError {
    pub needle: &'static str,
    pub found: usize,
}

/// What the variant replaces in the production text, in order.
const VERSION: &str = "version = 2";
const THREE_DS_TIMEOUT: &str = "timeout = \"15m\"";
const TRANSFER_TIMEOUT: &str = "timeout = \"3d\"";
const CANCEL_WINDOW: &str = "sleep = \"0s\"";

impl ShortOrderV2<'_> {
    /// The variant's definition text, from order v2's production text `source`.
    pub fn build(&self, source: &str) -> Result<String, VariantError> {
        let timeout = format!("timeout = \"{}\"", self.wait_timeout);
        let replacements = [
            (VERSION, format!("version = {}", self.version)),
            (THREE_DS_TIMEOUT, timeout.clone()),
            (TRANSFER_TIMEOUT, timeout),
            (CANCEL_WINDOW, format!("sleep = \"{}\"", self.cancel_window)),
        ];
        let mut text = source.to_owned();
        for (needle, replacement) in replacements {
            let found = text.matches(needle).count();
            if found != 1 {
                return Err(VariantError { needle, found });
            }
            text = text.replacen(needle, &replacement, 1);
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = include_str!("../../workflows/order-v2.toml");

    #[test]
    fn the_variant_replaces_exactly_the_version_the_waits_and_the_window() {
        let short = ShortOrderV2 { version: 3, wait_timeout: "3s", cancel_window: "2s" };
        let text = short.build(SOURCE).expect("builds");
        assert!(text.contains("\nversion = 3\n"));
        assert_eq!(text.matches("timeout = \"3s\"").count(), 2);
        assert!(text.contains("sleep = \"2s\""));
        assert!(!text.contains("\"15m\"") && !text.contains("\"3d\""));
        // Nothing else changed: the same number of lines, and the lines that differ are the
        // four replaced ones.
        let changed = SOURCE.lines().zip(text.lines()).filter(|(a, b)| a != b).count();
        assert_eq!((SOURCE.lines().count(), changed), (text.lines().count(), 4));
    }

    #[test]
    fn a_source_of_another_shape_is_an_error() {
        let short = ShortOrderV2 { version: 3, wait_timeout: "3s", cancel_window: "0s" };
        let error = short.build("name = \"order\"\nversion = 1\n").expect_err("no version 2");
        assert_eq!(error, VariantError { needle: VERSION, found: 0 });
        let twice = SOURCE.replace(CANCEL_WINDOW, "sleep = \"0s\"\nsleep = \"0s\"");
        assert_eq!(short.build(&twice).expect_err("two windows").found, 2);
    }
}
