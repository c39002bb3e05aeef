//! Decoding and server-side validation of pprof profiles, for tests and the loopback
//! upload receiver: every rule of ARCHITECTURE.md "Server rules" that applies to one
//! profile, plus the rules this crate's own output follows (string labels only, span and
//! trace ids in OpenTelemetry's hex form, no reserved keys).
//!
//! Outside the crate's own tests only [`decode`] is used (by `flamegraph`).
#![cfg_attr(
    not(any(test, feature = "__internal")),
    allow(dead_code, unused_imports)
)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::read::GzDecoder;
use prost::Message;

pub use crate::pprof::DecodeError;

pub use crate::pprof::proto::{
    Function, Label, Line, Location, Mapping, Profile, Sample, ValueType,
};

pub use crate::limits::{
    MAX_LABELS_PER_SAMPLE, MAX_LABEL_NAME_BYTES, MAX_LABEL_VALUE_BYTES, MAX_PROFILE_AGE,
    MAX_PROFILE_AHEAD, MAX_PROFILE_BYTES, MAX_SAMPLES, MAX_SERIES_LABEL_NAMES, MAX_STACK_DEPTH,
};

/// Decodes a profile, gzipped (detected by its magic bytes) or raw. Invalid UTF-8 in a
/// string is a decode error. Input that inflates beyond 4 MiB is refused.
pub fn decode(gz_or_raw: &[u8]) -> Result<Profile, DecodeError> {
    let raw;
    let bytes = if gz_or_raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(gz_or_raw)
            .take(MAX_PROFILE_BYTES as u64 + 1)
            .read_to_end(&mut out)
            .map_err(DecodeError::gzip)?;
        if out.len() > MAX_PROFILE_BYTES {
            return Err(DecodeError::too_large(MAX_PROFILE_BYTES));
        }
        raw = out;
        &raw[..]
    } else {
        gz_or_raw
    };
    Profile::decode(bytes).map_err(DecodeError::protobuf)
}

/// Checks every rule, with `time_nanos` judged against the current time.
pub fn validate(profile: &Profile) -> Result<(), String> {
    validate_at(profile, SystemTime::now())
}

/// Checks every rule, with `time_nanos` judged against `now`.
pub fn validate_at(profile: &Profile, now: SystemTime) -> Result<(), String> {
    let p = profile;
    let strings = &p.string_table;
    if strings.first().map(String::as_str) != Some("") {
        return Err("string_table[0] must be the empty string".into());
    }
    let str_at = |what: &str, i: i64| -> Result<&str, String> {
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .map(String::as_str)
            .ok_or_else(|| {
                format!(
                    "{what}: string index {i} out of range (table has {})",
                    strings.len()
                )
            })
    };
    // Sample types.
    if p.sample_type.is_empty() {
        return Err("profile has no sample_type".into());
    }
    for vt in &p.sample_type {
        let name = str_at("sample_type.type", vt.r#type)?;
        str_at("sample_type.unit", vt.unit)?;
        if name.contains('-') {
            return Err(format!("sample type name `{name}` contains `-`"));
        }
    }
    if let Some(vt) = &p.period_type {
        str_at("period_type.type", vt.r#type)?;
        str_at("period_type.unit", vt.unit)?;
    }
    for (what, i) in [
        ("drop_frames", p.drop_frames),
        ("keep_frames", p.keep_frames),
        ("default_sample_type", p.default_sample_type),
        ("doc_url", p.doc_url),
    ] {
        str_at(what, i)?;
    }
    for &c in &p.comment {
        str_at("comment", c)?;
    }
    // Ids: nonzero, unique.
    let mapping_ids = unique_ids("mapping", p.mapping.iter().map(|m| m.id))?;
    let function_ids = unique_ids("function", p.function.iter().map(|f| f.id))?;
    let location_ids = unique_ids("location", p.location.iter().map(|l| l.id))?;
    for m in &p.mapping {
        str_at("mapping.filename", m.filename)?;
        str_at("mapping.build_id", m.build_id)?;
    }
    for f in &p.function {
        str_at("function.name", f.name)?;
        str_at("function.system_name", f.system_name)?;
        str_at("function.filename", f.filename)?;
    }
    for l in &p.location {
        if l.mapping_id != 0 && !mapping_ids.contains(&l.mapping_id) {
            return Err(format!(
                "location {} refers to missing mapping {}",
                l.id, l.mapping_id
            ));
        }
        for line in &l.line {
            if !function_ids.contains(&line.function_id) {
                return Err(format!(
                    "location {} refers to missing function {}",
                    l.id, line.function_id
                ));
            }
        }
    }
    // Time.
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(p.time_nanos).unwrap_or(0));
    let earliest = now.checked_sub(MAX_PROFILE_AGE).unwrap_or(UNIX_EPOCH);
    if t < earliest || t > now + MAX_PROFILE_AHEAD {
        return Err(format!(
            "time_nanos {} is outside now - 1 h .. now + 10 min",
            p.time_nanos
        ));
    }
    // Limits.
    let size = p.encoded_len();
    if size > MAX_PROFILE_BYTES {
        return Err(format!(
            "profile is {size} bytes uncompressed; the limit is {MAX_PROFILE_BYTES}"
        ));
    }
    if p.sample.len() > MAX_SAMPLES {
        return Err(format!(
            "profile has {} samples; the limit is {MAX_SAMPLES}",
            p.sample.len()
        ));
    }
    // Samples.
    let mut series_keys: HashSet<&str> = HashSet::new();
    for (n, s) in p.sample.iter().enumerate() {
        if s.value.len() != p.sample_type.len() {
            return Err(format!(
                "sample {n} has {} values for {} sample types",
                s.value.len(),
                p.sample_type.len()
            ));
        }
        if s.value.iter().all(|&v| v == 0) {
            return Err(format!(
                "sample {n} has only zero values (the server drops it)"
            ));
        }
        if s.location_id.is_empty() {
            return Err(format!("sample {n} has no location"));
        }
        if s.location_id.len() > MAX_STACK_DEPTH {
            return Err(format!(
                "sample {n} is {} frames deep; the server keeps {MAX_STACK_DEPTH}",
                s.location_id.len()
            ));
        }
        for id in &s.location_id {
            if !location_ids.contains(id) {
                return Err(format!("sample {n} refers to missing location {id}"));
            }
        }
        if s.label.len() > MAX_LABELS_PER_SAMPLE {
            return Err(format!(
                "sample {n} has {} labels; the limit is {MAX_LABELS_PER_SAMPLE}",
                s.label.len()
            ));
        }
        let mut keys = HashSet::new();
        for label in &s.label {
            let key = str_at("label.key", label.key)?;
            let value = str_at("label.str", label.str)?;
            str_at("label.num_unit", label.num_unit)?;
            if label.num != 0 || label.num_unit != 0 {
                return Err(format!(
                    "sample {n}: numeric label `{key}` (the server drops numeric labels)"
                ));
            }
            if key.is_empty() {
                return Err(format!("sample {n} has a label with an empty name"));
            }
            if value.is_empty() {
                return Err(format!("sample {n}: label `{key}` has an empty value"));
            }
            if key.len() > MAX_LABEL_NAME_BYTES {
                return Err(format!(
                    "sample {n}: label name of {} bytes; the limit is {MAX_LABEL_NAME_BYTES}",
                    key.len()
                ));
            }
            if value.len() > MAX_LABEL_VALUE_BYTES {
                return Err(format!("sample {n}: label `{key}` value of {} bytes; the limit is {MAX_LABEL_VALUE_BYTES}", value.len()));
            }
            if !keys.insert(key) {
                return Err(format!("sample {n} has label `{key}` twice"));
            }
            if key.starts_with("__") || key == "profile_id" {
                return Err(format!(
                    "sample {n}: label name `{key}` is reserved by the server"
                ));
            }
            match key {
                "span_id" if !is_lower_hex(value, 16) => {
                    return Err(format!(
                        "sample {n}: span_id `{value}` is not 16 lowercase hex digits"
                    ));
                }
                "trace_id" if !is_lower_hex(value, 32) => {
                    return Err(format!(
                        "sample {n}: trace_id `{value}` is not 32 lowercase hex digits"
                    ));
                }
                "span_id" | "trace_id" => {}
                _ => {
                    series_keys.insert(key);
                }
            }
        }
    }
    if series_keys.len() > MAX_SERIES_LABEL_NAMES {
        return Err(format!(
            "samples carry {} distinct series label names; the server accepts {MAX_SERIES_LABEL_NAMES} per series",
            series_keys.len()
        ));
    }
    Ok(())
}

fn unique_ids(what: &str, ids: impl Iterator<Item = u64>) -> Result<HashSet<u64>, String> {
    let mut seen = HashSet::new();
    for id in ids {
        if id == 0 {
            return Err(format!("{what} id 0"));
        }
        if !seen.insert(id) {
            return Err(format!("duplicate {what} id {id}"));
        }
    }
    Ok(seen)
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// One sample in a readable form, for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleView {
    /// Function names, leaf first; inlined frames of one location callee first.
    pub functions: Vec<String>,
    /// String labels.
    pub labels: BTreeMap<String, String>,
    /// Values, one per sample type.
    pub values: Vec<i64>,
}

/// Lists the samples of a (validated) profile. Unknown ids and indices show as `?`.
pub fn samples(profile: &Profile) -> Vec<SampleView> {
    let s = |i: i64| -> String {
        usize::try_from(i)
            .ok()
            .and_then(|i| profile.string_table.get(i))
            .cloned()
            .unwrap_or_else(|| "?".into())
    };
    let functions: HashMap<u64, &Function> = profile.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &Location> = profile.location.iter().map(|l| (l.id, l)).collect();
    profile
        .sample
        .iter()
        .map(|sample| {
            let mut names = Vec::new();
            for id in &sample.location_id {
                match locations.get(id) {
                    Some(loc) => {
                        for line in &loc.line {
                            names.push(
                                functions
                                    .get(&line.function_id)
                                    .map_or_else(|| "?".into(), |f| s(f.name)),
                            );
                        }
                    }
                    None => names.push("?".into()),
                }
            }
            let labels = sample.label.iter().map(|l| (s(l.key), s(l.str))).collect();
            SampleView {
                functions: names,
                labels,
                values: sample.value.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid profile built by hand.
    fn valid() -> Profile {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        Profile {
            sample_type: vec![
                ValueType { r#type: 1, unit: 2 },
                ValueType { r#type: 3, unit: 4 },
            ],
            sample: vec![Sample {
                location_id: vec![1, 2],
                value: vec![1, 10_000_000],
                label: vec![
                    Label {
                        key: 5,
                        str: 6,
                        num: 0,
                        num_unit: 0,
                    },
                    Label {
                        key: 7,
                        str: 8,
                        num: 0,
                        num_unit: 0,
                    },
                ],
            }],
            mapping: vec![Mapping {
                id: 1,
                filename: 9,
                ..Mapping::default()
            }],
            location: vec![
                Location {
                    id: 1,
                    mapping_id: 1,
                    address: 0x10,
                    line: vec![Line {
                        function_id: 1,
                        line: 3,
                        column: 0,
                    }],
                    is_folded: false,
                },
                Location {
                    id: 2,
                    mapping_id: 0,
                    address: 0x20,
                    line: vec![],
                    is_folded: false,
                },
            ],
            function: vec![Function {
                id: 1,
                name: 10,
                system_name: 10,
                filename: 0,
                start_line: 0,
            }],
            string_table: [
                "",
                "samples",
                "count",
                "cpu",
                "nanoseconds",
                "span_id",
                "00f067aa0ba902b7",
                "span_name",
                "GET /",
                "/bin/app",
                "main",
            ]
            .map(String::from)
            .to_vec(),
            time_nanos: now,
            period_type: Some(ValueType { r#type: 3, unit: 4 }),
            period: 10_000_000,
            ..Profile::default()
        }
    }

    fn rejects(change: impl FnOnce(&mut Profile), needle: &str) {
        let mut p = valid();
        change(&mut p);
        let err = validate(&p).expect_err(needle);
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }

    #[test]
    fn a_well_formed_profile_passes_and_lists_its_samples() {
        validate(&valid()).unwrap();
        let views = samples(&valid());
        assert_eq!(views[0].functions, vec!["main".to_string()]);
        assert_eq!(views[0].labels["span_id"], "00f067aa0ba902b7");
        assert_eq!(views[0].values, vec![1, 10_000_000]);
    }

    #[test]
    fn each_server_rule_is_enforced() {
        rejects(|p| p.string_table[0] = "x".into(), "string_table[0]");
        rejects(|p| p.function[0].name = 99, "out of range");
        rejects(|p| p.sample[0].label[0].str = -1, "out of range");
        rejects(|p| p.sample_type.clear(), "no sample_type");
        rejects(|p| p.string_table[1] = "sam-ples".into(), "contains `-`");
        rejects(|p| p.sample[0].value.push(1), "2 sample types");
        rejects(|p| p.location[0].id = 0, "location id 0");
        rejects(|p| p.location[1].id = 1, "duplicate location id");
        rejects(|p| p.function[0].id = 0, "function id 0");
        rejects(|p| p.mapping[0].id = 0, "mapping id 0");
        rejects(|p| p.sample[0].location_id.push(9), "missing location");
        rejects(
            |p| p.location[0].line[0].function_id = 5,
            "missing function",
        );
        rejects(|p| p.location[0].mapping_id = 4, "missing mapping");
        rejects(|p| p.sample[0].label[0].num = 3, "numeric label");
        rejects(|p| p.sample[0].value = vec![0, 0], "zero values");
        rejects(|p| p.time_nanos -= 3_700_000_000_000, "time_nanos");
        rejects(|p| p.time_nanos += 700_000_000_000, "time_nanos");
        rejects(
            |p| p.sample = vec![p.sample[0].clone(); MAX_SAMPLES + 1],
            "samples; the limit",
        );
        rejects(
            |p| {
                p.string_table.push("v".into());
                let v = p.string_table.len() as i64 - 1;
                for i in 0..=MAX_LABELS_PER_SAMPLE {
                    p.string_table.push(format!("k{i}"));
                    let k = p.string_table.len() as i64 - 1;
                    p.sample[0].label.push(Label {
                        key: k,
                        str: v,
                        num: 0,
                        num_unit: 0,
                    });
                }
            },
            "labels; the limit",
        );
        rejects(
            |p| p.string_table[7] = "k".repeat(MAX_LABEL_NAME_BYTES + 1),
            "label name of",
        );
        rejects(
            |p| p.string_table[8] = "v".repeat(MAX_LABEL_VALUE_BYTES + 1),
            "value of",
        );
        rejects(
            |p| p.sample[0].location_id = vec![1; MAX_STACK_DEPTH + 1],
            "frames deep",
        );
        rejects(
            |p| p.string_table.push("x".repeat(MAX_PROFILE_BYTES)),
            "bytes uncompressed",
        );
        rejects(|p| p.string_table[6] = "00F067AA0BA902B7".into(), "span_id");
        rejects(|p| p.string_table[5] = "__name__".into(), "reserved");
        rejects(|p| p.sample[0].label[1].key = 5, "twice");
        rejects(
            |p| {
                for i in 0..=MAX_SERIES_LABEL_NAMES {
                    p.string_table.push(format!("key{i}"));
                    let k = p.string_table.len() as i64 - 1;
                    p.sample.push(Sample {
                        label: vec![Label {
                            key: k,
                            str: 8,
                            num: 0,
                            num_unit: 0,
                        }],
                        ..p.sample[0].clone()
                    });
                }
            },
            "series label names",
        );
    }

    #[test]
    fn decoding_accepts_gzip_and_raw_and_refuses_invalid_utf8() {
        use std::io::Write;
        let profile = valid();
        let raw = profile.encode_to_vec();
        assert_eq!(decode(&raw).unwrap(), profile);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&raw).unwrap();
        assert_eq!(decode(&gz.finish().unwrap()).unwrap(), profile);
        // A string_table entry (field 6, wire type 2) holding an invalid UTF-8 byte.
        let bad = [0x32, 0x01, 0xff];
        assert!(decode(&bad).is_err());
    }
}
