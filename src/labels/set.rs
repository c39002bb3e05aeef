//! The immutable label set and the rules its keys and values follow.

use std::fmt;

use crate::counters::{LogOnce, LABELS};
use crate::limits;

/// Longest label value the server keeps, in bytes; longer values are cut on a UTF-8
/// boundary (and counted).
pub const MAX_LABEL_VALUE_BYTES: usize = limits::MAX_LABEL_VALUE_BYTES;

/// Longest label key the server accepts, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = limits::MAX_LABEL_NAME_BYTES;

/// Why a label pair was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LabelError {
    /// The key is one the profiler writes itself or the server treats specially.
    ReservedKey {
        /// The refused key.
        key: String,
    },
    /// The key is empty.
    EmptyKey,
    /// The key is longer than [`MAX_LABEL_KEY_BYTES`].
    KeyTooLong {
        /// The key's length in bytes.
        len: usize,
    },
    /// The key contains a character outside `[A-Za-z0-9_.]` or starts with a digit.
    InvalidKey {
        /// The refused key.
        key: String,
    },
    /// The value is empty; the server treats an empty label as absent.
    EmptyValue {
        /// The key whose value was empty.
        key: String,
    },
}

impl fmt::Display for LabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReservedKey { key } => write!(
                f,
                "label key `{key}` is reserved (`span_id`, `trace_id`, `span_name`, \
                 `profile_id` and keys starting with `__` are set by the profiler or the \
                 server); choose another key"
            ),
            Self::EmptyKey => f.write_str("label key is empty; give the label a name"),
            Self::KeyTooLong { len } => write!(
                f,
                "label key is {len} bytes long; the server accepts at most \
                 {MAX_LABEL_KEY_BYTES}"
            ),
            Self::InvalidKey { key } => write!(
                f,
                "label key `{key}` is invalid; use letters, digits, `_` and `.`, not \
                 starting with a digit"
            ),
            Self::EmptyValue { key } => write!(
                f,
                "label `{key}` has an empty value, which the server treats as no label; \
                 leave the label out or give it a value"
            ),
        }
    }
}

impl std::error::Error for LabelError {}

/// Checks a user-supplied sample-label key.
pub(crate) fn validate_key(key: &str) -> Result<(), LabelError> {
    if key.is_empty() {
        return Err(LabelError::EmptyKey);
    }
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(LabelError::KeyTooLong { len: key.len() });
    }
    if limits::is_reserved_key(key) {
        return Err(LabelError::ReservedKey {
            key: key.to_owned(),
        });
    }
    let valid_chars = key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !valid_chars || key.as_bytes()[0].is_ascii_digit() {
        return Err(LabelError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(())
}

/// Cuts `value` to [`MAX_LABEL_VALUE_BYTES`] on a UTF-8 boundary, counting cuts.
pub(crate) fn bounded_value(mut value: String) -> String {
    static LOGGED: LogOnce = LogOnce::new();
    if value.len() > MAX_LABEL_VALUE_BYTES {
        let mut end = MAX_LABEL_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        value.truncate(end);
        LABELS.truncated_values.incr();
        if LOGGED.first() {
            log::warn!(
                target: "span_profiler",
                "a label value was longer than {MAX_LABEL_VALUE_BYTES} bytes and was cut; \
                 further cuts are only counted (stats: truncated_label_values)"
            );
        }
    }
    value
}

/// An immutable set of labels: what one label id in the registry stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    /// Id of the (local root) span, written as 16 lowercase hex digits.
    pub(crate) span_id: Option<u64>,
    /// Name of the (local root) span; becomes a series label on the server.
    pub(crate) span_name: Option<String>,
    /// Trace id, written as 32 lowercase hex digits (off unless asked for).
    pub(crate) trace_id: Option<u128>,
    /// Extra string pairs, keys validated, unique, in insertion order.
    pub(crate) pairs: Vec<(String, String)>,
}

impl LabelSet {
    /// True when the set carries nothing: samples under it are unlabelled.
    pub(crate) fn is_empty(&self) -> bool {
        self.span_id.is_none()
            && self.span_name.is_none()
            && self.trace_id.is_none()
            && self.pairs.is_empty()
    }

    /// Adds or replaces one validated pair.
    pub(crate) fn insert(&mut self, key: String, value: String) {
        match self.pairs.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => self.pairs.push((key, value)),
        }
    }
}

/// Formats a span id exactly as OpenTelemetry's `SpanId` prints it.
pub(crate) fn span_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

/// Formats a trace id exactly as OpenTelemetry's `TraceId` prints it.
pub(crate) fn trace_id_hex(id: u128) -> String {
    format!("{id:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_and_malformed_keys_are_refused_with_the_rule() {
        for key in [
            "span_id",
            "trace_id",
            "span_name",
            "profile_id",
            "__name__",
            "__x",
        ] {
            let err = validate_key(key).unwrap_err();
            assert!(
                matches!(err, LabelError::ReservedKey { .. }),
                "{key}: {err}"
            );
            assert!(err.to_string().contains("reserved"));
        }
        assert_eq!(validate_key(""), Err(LabelError::EmptyKey));
        assert!(matches!(
            validate_key("a-b"),
            Err(LabelError::InvalidKey { .. })
        ));
        assert!(matches!(
            validate_key("a,b"),
            Err(LabelError::InvalidKey { .. })
        ));
        assert!(matches!(
            validate_key("9lives"),
            Err(LabelError::InvalidKey { .. })
        ));
        let long = "k".repeat(MAX_LABEL_KEY_BYTES + 1);
        assert!(matches!(
            validate_key(&long),
            Err(LabelError::KeyTooLong { .. })
        ));
        for key in ["region", "http.route", "_private", "a9"] {
            assert_eq!(validate_key(key), Ok(()), "{key}");
        }
    }

    #[test]
    fn long_values_are_cut_on_a_char_boundary_and_counted() {
        let before = LABELS.truncated_values.get();
        // 'é' is two bytes: 1025 of them are 2050 bytes, cut to 2048 (1024 chars).
        let cut = bounded_value("é".repeat(1025));
        assert_eq!(cut.len(), 2048);
        assert_eq!(cut.chars().count(), 1024);
        // A three-byte char straddling the limit is dropped whole.
        let cut = bounded_value(format!("{}€", "a".repeat(2046)));
        assert_eq!(cut.len(), 2046);
        assert!(LABELS.truncated_values.get() >= before + 2);
        assert_eq!(bounded_value("short".into()), "short");
    }

    #[test]
    fn ids_are_written_like_opentelemetry() {
        assert_eq!(span_id_hex(0x00f0_67aa_0ba9_02b7), "00f067aa0ba902b7");
        assert_eq!(span_id_hex(1), "0000000000000001");
        assert_eq!(
            trace_id_hex(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }
}
