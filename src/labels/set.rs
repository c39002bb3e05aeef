//! The immutable label set and the rules its keys and values follow.

use std::borrow::Cow;
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
    if let Some(end) = cut_at(&value) {
        value.truncate(end);
    }
    value
}

/// [`bounded_value`] for a value that may be borrowed: a value within the limit stays
/// as it is (borrowed values are not copied).
#[cfg_attr(not(feature = "otel"), allow(dead_code))]
#[inline]
pub(crate) fn bounded_cow(value: Cow<'static, str>) -> Cow<'static, str> {
    // The common case, inlined into the tracer's path: a name within the limit.
    if value.len() <= MAX_LABEL_VALUE_BYTES {
        return value;
    }
    cut_cow(value)
}

/// [`bounded_cow`] for a value over the limit.
#[cold]
fn cut_cow(value: Cow<'static, str>) -> Cow<'static, str> {
    match cut_at(&value) {
        None => value,
        Some(end) => match value {
            Cow::Borrowed(s) => Cow::Borrowed(&s[..end]),
            Cow::Owned(mut s) => {
                s.truncate(end);
                Cow::Owned(s)
            }
        },
    }
}

/// Where `value` must be cut to fit [`MAX_LABEL_VALUE_BYTES`] (a UTF-8 boundary), if it
/// must; the cut is counted and logged once.
fn cut_at(value: &str) -> Option<usize> {
    static LOGGED: LogOnce = LogOnce::new();
    if value.len() > MAX_LABEL_VALUE_BYTES {
        let mut end = MAX_LABEL_VALUE_BYTES;
        while !value.is_char_boundary(end) {
            end -= 1;
        }
        LABELS.truncated_values.incr();
        if LOGGED.first() {
            log::warn!(
                target: "span_profiler",
                "a label value was longer than {MAX_LABEL_VALUE_BYTES} bytes and was cut; \
                 further cuts are only counted (stats: truncated_label_values)"
            );
        }
        return Some(end);
    }
    None
}

/// An immutable set of labels: what one label id in the registry stands for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct LabelSet {
    /// Id of the (local root) span, written as 16 lowercase hex digits.
    pub(crate) span_id: Option<u64>,
    /// Name of the (local root) span; becomes a series label on the server. Borrowed
    /// when the span was named by a `&'static str` (the usual case: a route template), so
    /// that labelling a span copies no name.
    pub(crate) span_name: Option<Cow<'static, str>>,
    /// Trace id. Written as the `trace_id` sample label (32 lowercase hex digits) only
    /// when `trace_id_label` is set; otherwise carried for OTLP links alone.
    pub(crate) trace_id: Option<u128>,
    /// Whether pprof profiles write `trace_id` as a sample label: asked for with
    /// `Labels::with_trace_id` or `ProfilingTracerProvider::with_trace_id_label(true)`.
    pub(crate) trace_id_label: bool,
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

/// Lowercase hex digits, by value.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `id` as 16 lowercase hex digits (big-endian, zero-padded) into `out`.
fn write_hex(id: u64, out: &mut [u8; 16]) {
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = HEX_DIGITS[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Formats a span id exactly as OpenTelemetry's `SpanId` prints it (16 lowercase hex
/// digits). Written by hand rather than with `format!`: the tracer formats one per local
/// root span (the `pyroscope.profile.id` attribute), and the formatting machinery cost
/// more than the rest of the attribute. The string's capacity is exactly 16, so turning
/// it into the attribute's `Box<str>` does not reallocate.
pub(crate) fn span_id_hex(id: u64) -> String {
    hex_string(span_id_digits(id).to_vec())
}

/// A span id's 16 lowercase hex digits, as [`span_id_hex`] writes them, without a `String`.
pub(crate) fn span_id_digits(id: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    write_hex(id, &mut digits);
    digits
}

/// `digits` (ASCII hex digits, as `write_hex` writes them) as a `String` of the same
/// capacity.
fn hex_string(digits: Vec<u8>) -> String {
    // Every byte is an ASCII hex digit, so the check passes; checking 16 or 32 bytes at
    // once costs less than pushing them one `char` at a time.
    String::from_utf8(digits).unwrap_or_default()
}

/// Formats a trace id exactly as OpenTelemetry's `TraceId` prints it (32 lowercase hex
/// digits).
pub(crate) fn trace_id_hex(id: u128) -> String {
    hex_string(trace_id_digits(id).to_vec())
}

/// A trace id's 32 lowercase hex digits, as [`trace_id_hex`] writes them, without a
/// `String`.
pub(crate) fn trace_id_digits(id: u128) -> [u8; 32] {
    let (mut high, mut low) = ([0u8; 16], [0u8; 16]);
    write_hex((id >> 64) as u64, &mut high);
    write_hex(id as u64, &mut low);
    let mut digits = [0u8; 32];
    digits[..16].copy_from_slice(&high);
    digits[16..].copy_from_slice(&low);
    digits
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
        // Borrowed values within the limit stay borrowed; longer ones are cut the same way.
        assert!(matches!(
            bounded_cow(Cow::Borrowed("short")),
            Cow::Borrowed("short")
        ));
        // Held by a static rather than leaked, so that Miri's leak check stays quiet.
        static LONG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let long: &'static str = LONG.get_or_init(|| "é".repeat(1025));
        let cut = bounded_cow(Cow::Borrowed(long));
        assert!(matches!(cut, Cow::Borrowed(_)));
        assert_eq!(cut.len(), 2048);
        assert_eq!(bounded_cow(Cow::Owned("é".repeat(1025))).len(), 2048);
    }

    #[test]
    fn ids_are_written_like_opentelemetry() {
        assert_eq!(span_id_hex(0x00f0_67aa_0ba9_02b7), "00f067aa0ba902b7");
        assert_eq!(span_id_hex(1), "0000000000000001");
        assert_eq!(span_id_hex(u64::MAX), "ffffffffffffffff");
        assert_eq!(span_id_hex(0), "0000000000000000");
        for id in [
            0x0123_4567_89ab_cdef_u64,
            0xfedc_ba98_7654_3210,
            0x8000_0000_0000_000a,
        ] {
            let otel = opentelemetry_span_id_display(id);
            assert_eq!(span_id_hex(id), otel);
            assert_eq!(
                span_id_hex(id).capacity(),
                16,
                "no reallocation into Box<str>"
            );
        }
        assert_eq!(trace_id_hex(1), format!("{:032x}", 1));
        assert_eq!(trace_id_hex(u128::MAX), "f".repeat(32));
        assert_eq!(
            trace_id_hex(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    /// How OpenTelemetry prints a span id (its `Display`), where the crate has it; the
    /// `format!` spelling otherwise (same rule: 16 lowercase hex digits).
    fn opentelemetry_span_id_display(id: u64) -> String {
        #[cfg(feature = "otel")]
        return opentelemetry::trace::SpanId::from_bytes(id.to_be_bytes()).to_string();
        #[cfg(not(feature = "otel"))]
        return format!("{id:016x}");
    }
}
