//! A closed window to OTLP `ExportProfilesServiceRequest`s (ARCHITECTURE.md "OTLP export").
//!
//! Every address is symbolized once per window. The samples are then packed into
//! requests: each request is complete on its own (its own dictionary, whose tables all
//! start with their zero value at index 0, as the proto requires and Pyroscope's
//! converter assumes). A request holds at most `max_samples` samples; one whose encoding
//! is larger than `max_bytes` is split in halves until it fits (a single sample that does
//! not fit is sent alone).
//!
//! What Pyroscope's OTLP ingester makes of it: sample type `samples/count` with period
//! type `cpu/nanoseconds` is its `process_cpu` profile (values times the period become
//! `cpu/nanoseconds`); each sample's link becomes the `span_id` (and, with a 16-byte trace
//! id, `trace_id`) sample label; its string attributes (`span_name`, user pairs) become
//! sample labels; resource attributes become series labels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use prost::Message;

use super::proto::{
    any_value, AnyValue, ExportProfilesServiceRequest, Function, InstrumentationScope, KeyValue,
    KeyValueAndUnit, Line, Link, Location, Mapping, Profile, ProfilesDictionary, Resource,
    ResourceProfiles, Sample, ScopeProfiles, Stack, ValueType,
};
use crate::labels::set::{span_id_hex, LabelSet};
use crate::symbolize::symbolizer::{MappingInfo, Symbolized};
use crate::symbolize::{lookup_address, Symbolizer};
use crate::window::aggregate::WindowSample;
use crate::window::ClosedWindow;

/// The instrumentation scope's name (the crate).
pub(crate) const SCOPE_NAME: &str = "span-profiler";

/// Mapping attribute that carries the GNU build id (the key Pyroscope reads).
const BUILD_ID_KEY: &str = "process.executable.build_id.gnu";

/// How to encode a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EncodeOptions {
    /// Nanoseconds between samples: 1e9 / sampling rate in Hz.
    pub(crate) period_ns: u64,
    /// Largest request body before compression, in bytes.
    pub(crate) max_bytes: usize,
    /// Most samples per request.
    pub(crate) max_samples: usize,
}

/// A string resource attribute.
pub(crate) fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

cfg_internal! {
    /// Encodes `window` into requests (uncompressed protobuf bodies), each with `resource`.
    /// An empty window gives none.
    pub(crate) fn encode(
        window: &ClosedWindow,
        symbolizer: &mut Symbolizer,
        opts: &EncodeOptions,
        resource: &[KeyValue],
    ) -> Vec<Vec<u8>> {
        symbolizer.prepare(crate::symbolize::lookup_addresses(&window.stacks));
        encode_prepared(window, symbolizer, opts, resource)
    }
}

/// Encodes `window` once `symbolizer` has prepared its addresses
/// ([`Symbolizer::prepare`]): from here on the symbolizer mostly answers from its cache.
pub(crate) fn encode_prepared(
    window: &ClosedWindow,
    symbolizer: &mut Symbolizer,
    opts: &EncodeOptions,
    resource: &[KeyValue],
) -> Vec<Vec<u8>> {
    if window.samples.is_empty() {
        return Vec::new();
    }
    let symbols = Symbols::build(window, symbolizer);
    let mut bodies = Vec::new();
    for chunk in window.samples.chunks(opts.max_samples.max(1)) {
        encode_fitting(window, &symbols, opts, resource, chunk, &mut bodies);
    }
    bodies
}

/// Encodes `samples` as one request, or halves while the body is over `max_bytes`.
fn encode_fitting(
    window: &ClosedWindow,
    symbols: &Symbols,
    opts: &EncodeOptions,
    resource: &[KeyValue],
    samples: &[WindowSample],
    out: &mut Vec<Vec<u8>>,
) {
    let request = build_request(window, symbols, opts, resource, samples);
    if request.encoded_len() <= opts.max_bytes || samples.len() == 1 {
        out.push(request.encode_to_vec());
        return;
    }
    let (first, second) = samples.split_at(samples.len() / 2);
    encode_fitting(window, symbols, opts, resource, first, out);
    encode_fitting(window, symbols, opts, resource, second, out);
}

/// Every address of the window, symbolized once.
struct Symbols {
    /// Per window stack: the symbolized frames, leaf first, with their lookup address.
    stacks: Vec<Vec<(u64, Arc<Symbolized>)>>,
    modules: HashMap<usize, MappingInfo>,
}

impl Symbols {
    fn build(window: &ClosedWindow, symbolizer: &mut Symbolizer) -> Self {
        let mut modules = HashMap::new();
        let stacks = window
            .stacks
            .iter()
            .map(|frames| {
                frames
                    .iter()
                    .enumerate()
                    .map(|(depth, &frame)| {
                        let addr = lookup_address(depth, frame);
                        let sym = symbolizer.symbolize(addr);
                        if let Some(module) = sym.module {
                            modules
                                .entry(module)
                                .or_insert_with(|| symbolizer.mapping_info(module));
                        }
                        (addr as u64, sym)
                    })
                    .collect()
            })
            .collect();
        Self { stacks, modules }
    }
}

/// One request's dictionary, filled as samples are added; every table starts with its
/// zero value.
struct Dictionary {
    dict: ProfilesDictionary,
    strings: HashMap<Arc<str>, i32>,
    functions: HashMap<(i32, i32, i32, u32), i32>,
    mappings: HashMap<usize, i32>,
    locations: HashMap<u64, i32>,
    stacks: HashMap<u32, i32>,
    attributes: HashMap<(i32, String), i32>,
    links: HashMap<(u128, u64), i32>,
}

fn index(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

impl Dictionary {
    fn new() -> Self {
        let dict = ProfilesDictionary {
            mapping_table: vec![Mapping::default()],
            location_table: vec![Location::default()],
            function_table: vec![Function::default()],
            link_table: vec![Link::default()],
            string_table: vec![String::new()],
            attribute_table: vec![KeyValueAndUnit::default()],
            stack_table: vec![Stack::default()],
        };
        let mut strings = HashMap::new();
        strings.insert(Arc::from(""), 0);
        Self {
            dict,
            strings,
            functions: HashMap::new(),
            mappings: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            attributes: HashMap::new(),
            links: HashMap::new(),
        }
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.strings.get(s) {
            return i;
        }
        let i = index(self.dict.string_table.len());
        self.dict.string_table.push(s.to_owned());
        self.strings.insert(Arc::from(s), i);
        i
    }

    fn attribute(&mut self, key: &str, value: &str) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attributes.get(&(key, value.to_owned())) {
            return i;
        }
        let i = index(self.dict.attribute_table.len());
        self.dict.attribute_table.push(KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            unit_strindex: 0,
        });
        self.attributes.insert((key, value.to_owned()), i);
        i
    }

    fn mapping(&mut self, module: usize, info: &MappingInfo) -> i32 {
        if let Some(&i) = self.mappings.get(&module) {
            return i;
        }
        let filename_strindex = self.string(&info.name);
        let attribute_indices = if info.build_id.is_empty() {
            Vec::new()
        } else {
            vec![self.attribute(BUILD_ID_KEY, &info.build_id)]
        };
        let i = index(self.dict.mapping_table.len());
        self.dict.mapping_table.push(Mapping {
            memory_start: info.memory_start,
            memory_limit: info.memory_limit,
            file_offset: info.file_offset,
            filename_strindex,
            attribute_indices,
        });
        self.mappings.insert(module, i);
        i
    }

    fn location(&mut self, address: u64, sym: &Symbolized, symbols: &Symbols) -> i32 {
        if let Some(&i) = self.locations.get(&address) {
            return i;
        }
        let mapping_index = match sym
            .module
            .and_then(|m| symbols.modules.get(&m).map(|i| (m, i)))
        {
            Some((module, info)) => self.mapping(module, info),
            None => 0,
        };
        let lines = sym
            .frames
            .iter()
            .map(|f| {
                let key = (
                    self.string(&f.name),
                    self.string(&f.system_name),
                    self.string(&f.file),
                    f.start_line,
                );
                let function_index = match self.functions.get(&key) {
                    Some(&i) => i,
                    None => {
                        let i = index(self.dict.function_table.len());
                        self.dict.function_table.push(Function {
                            name_strindex: key.0,
                            system_name_strindex: key.1,
                            filename_strindex: key.2,
                            start_line: i64::from(key.3),
                        });
                        self.functions.insert(key, i);
                        i
                    }
                };
                Line {
                    function_index,
                    line: i64::from(f.line),
                }
            })
            .collect();
        let i = index(self.dict.location_table.len());
        self.dict.location_table.push(Location {
            mapping_index,
            address,
            lines,
        });
        self.locations.insert(address, i);
        i
    }

    fn stack(&mut self, stack: u32, symbols: &Symbols) -> i32 {
        if let Some(&i) = self.stacks.get(&stack) {
            return i;
        }
        let location_indices = symbols.stacks[stack as usize]
            .iter()
            .map(|(address, sym)| self.location(*address, sym, symbols))
            .collect();
        let i = index(self.dict.stack_table.len());
        self.dict.stack_table.push(Stack { location_indices });
        self.stacks.insert(stack, i);
        i
    }

    /// The sample's attributes and link from its label set.
    fn labels(&mut self, set: &LabelSet) -> (Vec<i32>, i32) {
        let mut attributes = Vec::with_capacity(1 + set.pairs.len());
        if let Some(name) = set.span_name.as_deref().filter(|n| !n.is_empty()) {
            attributes.push(self.attribute("span_name", name));
        }
        for (k, v) in &set.pairs {
            attributes.push(self.attribute(k, v));
        }
        let link = match (set.span_id, set.trace_id) {
            (Some(span_id), Some(trace_id)) => match self.links.get(&(trace_id, span_id)) {
                Some(&i) => i,
                None => {
                    let i = index(self.dict.link_table.len());
                    self.dict.link_table.push(Link {
                        trace_id: trace_id.to_be_bytes().to_vec(),
                        span_id: span_id.to_be_bytes().to_vec(),
                    });
                    self.links.insert((trace_id, span_id), i);
                    i
                }
            },
            (Some(span_id), None) => {
                // No trace id (`Labels::span`, or a span begun before OTLP export was
                // on): a link needs one, so the span id goes as the `span_id` attribute,
                // which Pyroscope reads as the same label.
                attributes.push(self.attribute("span_id", &span_id_hex(span_id)));
                0
            }
            (None, _) => 0,
        };
        (attributes, link)
    }
}

fn build_request(
    window: &ClosedWindow,
    symbols: &Symbols,
    opts: &EncodeOptions,
    resource: &[KeyValue],
    samples: &[WindowSample],
) -> ExportProfilesServiceRequest {
    let mut dict = Dictionary::new();
    let sample_type = ValueType {
        type_strindex: dict.string("samples"),
        unit_strindex: dict.string("count"),
    };
    let period_type = ValueType {
        type_strindex: dict.string("cpu"),
        unit_strindex: dict.string("nanoseconds"),
    };
    let samples = samples
        .iter()
        .map(|s| {
            let stack_index = dict.stack(s.stack, symbols);
            let (attribute_indices, link_index) =
                dict.labels(&window.label_sets[s.labels as usize]);
            Sample {
                stack_index,
                attribute_indices,
                link_index,
                values: vec![i64::try_from(s.weight).unwrap_or(i64::MAX)],
            }
        })
        .collect();
    let nanos = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    };
    let start = nanos(window.start);
    let profile = Profile {
        sample_type: Some(sample_type),
        samples,
        time_unix_nano: start,
        duration_nano: nanos(window.end).saturating_sub(start),
        period_type: Some(period_type),
        period: i64::try_from(opts.period_ns).unwrap_or(i64::MAX),
        profile_id: Vec::new(),
    };
    ExportProfilesServiceRequest {
        resource_profiles: vec![ResourceProfiles {
            resource: Some(Resource {
                attributes: resource.to_vec(),
            }),
            scope_profiles: vec![ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.to_owned(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
                profiles: vec![profile],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
        dictionary: Some(dict.dict),
    }
}
