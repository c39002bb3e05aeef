//! The OTLP endpoint of the loopback receiver: decodes requests with opentelemetry-rust's
//! generated types (the `opentelemetry-proto` crate, same proto release as the exporter,
//! never the exporter's own messages) and applies what Grafana Pyroscope's OTLP ingester
//! (`pkg/ingester/otlp`) requires before it converts a profile to pprof:
//!
//! - `Content-Type: application/x-protobuf` (else 415), optional `Content-Encoding: gzip`;
//! - a dictionary and resource profiles; every table's index 0 is its zero value and
//!   `string_table[0] == ""`; every index in range;
//! - one sample type per profile; sample type `samples/count` with period type
//!   `cpu/nanoseconds` and a period: Pyroscope's `process_cpu` profile (values times the
//!   period become `cpu/nanoseconds`);
//! - one value per sample, never 0; a stack index in range;
//! - links: `link_index` 0 or a link with an 8-byte span id (hex: `span_id`) and a 16-byte
//!   trace id (hex: `trace_id`); string attributes become sample labels;
//! - resource attributes become series labels with `__delta__`, `__otel__`, `__name__`
//!   and `service_name` (from `service.name`); with the sample-label keys other than
//!   `span_id`/`trace_id` at most 30 names;
//! - at most 16,000 samples per profile; time within the last hour.
//!
//! What passes is converted the way Pyroscope converts it, for the tests' queries.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::AnyValue;
use opentelemetry_proto::tonic::profiles::v1development::{
    Function, KeyValueAndUnit, Link, Location, Mapping, ProfilesDictionary, Stack,
};
use prost::Message;

/// One converted sample.
#[derive(Debug, Clone)]
pub struct OtlpSample {
    /// Function names, leaf first (inlined frames expanded, callee first).
    pub stack: Vec<String>,
    /// CPU nanoseconds (count times period).
    pub cpu_ns: i64,
    /// Sample labels as Pyroscope derives them (attributes, then `span_id`, `trace_id`).
    pub labels: Vec<(String, String)>,
}

impl OtlpSample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One converted profile: its series labels and samples.
#[derive(Debug, Clone)]
pub struct OtlpProfile {
    pub series_labels: BTreeMap<String, String>,
    pub samples: Vec<OtlpSample>,
    pub period: i64,
}

/// A request as Pyroscope converts it.
#[derive(Debug, Clone)]
pub struct OtlpRequest {
    pub profiles: Vec<OtlpProfile>,
    /// Distinct links of the dictionary (span id hex, trace id hex).
    pub links: Vec<(String, String)>,
    /// Resource attributes (string and int values), in order.
    pub resource: Vec<(String, String)>,
}

impl OtlpRequest {
    pub fn samples(&self) -> impl Iterator<Item = &OtlpSample> {
        self.profiles.iter().flat_map(|p| p.samples.iter())
    }

    /// Pyroscope's span query: the samples carrying `span_id`.
    pub fn span_samples<'a>(&'a self, span_id: &'a str) -> impl Iterator<Item = &'a OtlpSample> {
        self.samples()
            .filter(move |s| s.label("span_id") == Some(span_id))
    }
}

type Rule = (u16, String);

fn bad(rule: impl Into<String>) -> Rule {
    (400, rule.into())
}

fn at<'a, T>(table: &'a [T], index: i32, what: &str) -> Result<&'a T, Rule> {
    usize::try_from(index)
        .ok()
        .and_then(|i| table.get(i))
        .ok_or_else(|| {
            bad(format!(
                "{what} index {index} out of range ({})",
                table.len()
            ))
        })
}

fn any_string(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        _ => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a request's headers and body; converts it when every rule holds.
pub fn check(content_type: Option<&str>, gzip: bool, body: &[u8]) -> Result<OtlpRequest, Rule> {
    if content_type != Some("application/x-protobuf") {
        return Err((415, format!("unsupported content type {content_type:?}")));
    }
    let body = if gzip {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
            .map_err(|e| bad(format!("body is not valid gzip: {e}")))?;
        out
    } else {
        body.to_vec()
    };
    if body.starts_with(&[0x1f, 0x8b]) {
        return Err(bad("gzipped body without Content-Encoding: gzip"));
    }
    let request = ExportProfilesServiceRequest::decode(body.as_slice())
        .map_err(|e| bad(format!("not an ExportProfilesServiceRequest: {e}")))?;
    let dict = request
        .dictionary
        .as_ref()
        .ok_or_else(|| bad("missing profile metadata dictionary"))?;
    if request.resource_profiles.is_empty() {
        return Err(bad("missing resource profiles"));
    }
    check_zero_entries(dict)?;
    let strings = &dict.string_table;
    let s = |i: i32, what: &str| at(strings, i, what).cloned();
    let mut links = Vec::new();
    for link in &dict.link_table[1..] {
        if link.span_id.len() != 8 {
            return Err(bad(format!("link span id of {} bytes", link.span_id.len())));
        }
        if link.trace_id.len() != 16 {
            return Err(bad(format!(
                "link trace id of {} bytes",
                link.trace_id.len()
            )));
        }
        links.push((hex(&link.span_id), hex(&link.trace_id)));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let mut profiles = Vec::new();
    let mut resource = Vec::new();
    for rp in &request.resource_profiles {
        let attrs = rp
            .resource
            .as_ref()
            .map(|r| r.attributes.clone())
            .unwrap_or_default();
        resource = attrs
            .iter()
            .map(|kv| (kv.key.clone(), any_string(&kv.value)))
            .collect();
        let service_name = resource
            .iter()
            .find(|(k, _)| k == "service.name")
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| bad("resource without service.name"))?;
        if rp.scope_profiles.len() != 1 {
            return Err(bad("expected exactly one scope"));
        }
        for sp in &rp.scope_profiles {
            for p in &sp.profiles {
                let st = p
                    .sample_type
                    .as_ref()
                    .ok_or_else(|| bad("sample type is missing"))?;
                let pt = p
                    .period_type
                    .as_ref()
                    .ok_or_else(|| bad("period type is missing"))?;
                let profile_type = format!(
                    "{}:{}:{}:{}",
                    s(st.type_strindex, "sample type")?,
                    s(st.unit_strindex, "sample unit")?,
                    s(pt.type_strindex, "period type")?,
                    s(pt.unit_strindex, "period unit")?
                );
                if profile_type != "samples:count:cpu:nanoseconds" || p.period <= 0 {
                    return Err(bad(format!(
                        "profile type {profile_type} period {} is not Pyroscope's process_cpu",
                        p.period
                    )));
                }
                let t = Duration::from_nanos(p.time_unix_nano);
                if t + Duration::from_secs(3600) < now || t > now + Duration::from_secs(600) {
                    return Err(bad("time_unix_nano outside now - 1 h .. now + 10 min"));
                }
                if p.samples.len() > 16_000 {
                    return Err(bad(format!("{} samples in one profile", p.samples.len())));
                }
                let mut samples = Vec::with_capacity(p.samples.len());
                let mut label_keys = BTreeSet::new();
                for sample in &p.samples {
                    if sample.values.len() != 1 {
                        return Err(bad(format!("sample with {} values", sample.values.len())));
                    }
                    if sample.values[0] <= 0 {
                        return Err(bad("sample value is not positive"));
                    }
                    let stack = at(&dict.stack_table, sample.stack_index, "stack")?;
                    let mut names = Vec::new();
                    for &li in &stack.location_indices {
                        let loc = at(&dict.location_table, li, "location")?;
                        let mapping = at(&dict.mapping_table, loc.mapping_index, "mapping")?;
                        s(mapping.filename_strindex, "mapping filename")?;
                        for &ai in &mapping.attribute_indices {
                            let a = at(&dict.attribute_table, ai, "mapping attribute")?;
                            s(a.key_strindex, "attribute key")?;
                        }
                        for line in &loc.lines {
                            let f = at(&dict.function_table, line.function_index, "function")?;
                            names.push(s(f.name_strindex, "function name")?);
                            s(f.system_name_strindex, "function system name")?;
                            s(f.filename_strindex, "function file")?;
                        }
                    }
                    let mut labels = Vec::new();
                    for &ai in &sample.attribute_indices {
                        let a = at(&dict.attribute_table, ai, "sample attribute")?;
                        let key = s(a.key_strindex, "attribute key")?;
                        let value = any_string(&a.value);
                        if key == "service.name" {
                            return Err(bad("service.name as a sample attribute"));
                        }
                        if !value.is_empty() {
                            label_keys.insert(key.clone());
                            labels.push((key, value));
                        }
                    }
                    if sample.link_index != 0 {
                        let link = at(&dict.link_table, sample.link_index, "link")?;
                        labels.push(("span_id".into(), hex(&link.span_id)));
                        labels.push(("trace_id".into(), hex(&link.trace_id)));
                    }
                    samples.push(OtlpSample {
                        stack: names,
                        cpu_ns: sample.values[0] * p.period,
                        labels,
                    });
                }
                let mut series_labels = BTreeMap::new();
                series_labels.insert("__delta__".to_string(), "false".to_string());
                series_labels.insert("__otel__".to_string(), "true".to_string());
                series_labels.insert("__name__".to_string(), "process_cpu".to_string());
                for (k, v) in &resource {
                    if !v.is_empty() {
                        series_labels.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
                series_labels.insert("service_name".into(), service_name.clone());
                let names: BTreeSet<&String> =
                    series_labels.keys().chain(label_keys.iter()).collect();
                if names.len() > 30 {
                    return Err(bad(format!("{} label names in one series", names.len())));
                }
                profiles.push(OtlpProfile {
                    series_labels,
                    samples,
                    period: p.period,
                });
            }
        }
    }
    Ok(OtlpRequest {
        profiles,
        links,
        resource,
    })
}

fn check_zero_entries(dict: &ProfilesDictionary) -> Result<(), Rule> {
    let zero = |ok: bool, table: &str| {
        if ok {
            Ok(())
        } else {
            Err(bad(format!("{table}[0] is not the zero value")))
        }
    };
    zero(
        dict.string_table.first().is_some_and(String::is_empty),
        "string_table",
    )?;
    zero(
        dict.mapping_table.first() == Some(&Mapping::default()),
        "mapping_table",
    )?;
    zero(
        dict.location_table.first() == Some(&Location::default()),
        "location_table",
    )?;
    zero(
        dict.function_table.first() == Some(&Function::default()),
        "function_table",
    )?;
    zero(
        dict.link_table.first() == Some(&Link::default()),
        "link_table",
    )?;
    zero(
        dict.attribute_table.first() == Some(&KeyValueAndUnit::default()),
        "attribute_table",
    )?;
    zero(
        dict.stack_table.first() == Some(&Stack::default()),
        "stack_table",
    )
}
