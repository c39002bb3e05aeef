//! A closed window to gzipped pprof CPU profiles, exactly as Go writes them
//! (ARCHITECTURE.md "The window pipeline and its caps": a CPU profile as Go writes it).
//!
//! Two passes. The first symbolizes every distinct address once and builds window-wide
//! tables of strings, functions, mappings and locations. The second packs the samples
//! into pieces: each piece is a complete profile holding only the table entries its
//! samples use, with its own ids (from 1) and string table. Its encoded size is tracked
//! exactly while samples are added (repeated fields encode independently, so the size is
//! the header plus the sum of what each addition appends); a sample that would push a
//! piece over `max_piece_bytes` or `max_piece_samples` starts the next piece. Nothing is
//! dropped: a single sample too large for an empty piece is sent alone, counted in
//! `pieces_oversized`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use flate2::write::GzEncoder;
use flate2::Compression;
use prost::encoding::{message, string};
use prost::Message;

use crate::counters::LogOnce;
use crate::labels::set::{span_id_hex, trace_id_hex};
use crate::pprof::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::pprof::ENCODE;
use crate::symbolize::{lookup_address, Symbolizer};
use crate::window::{ClosedWindow, ProfileKind, WindowSample};

/// gzip level: Go's `runtime/pprof` writes with `gzip.BestSpeed` too.
const GZIP_LEVEL: u32 = 1;

/// Strings every piece starts with, at these indices.
const FIXED_STRINGS: [&str; 5] = ["", "samples", "count", "cpu", "nanoseconds"];
const S_SAMPLES: i64 = 1;
const S_COUNT: i64 = 2;
const S_CPU: i64 = 3;
const S_NANOSECONDS: i64 = 4;

/// Strings every allocation piece starts with (Go's heap profile types), at these indices.
const ALLOC_FIXED_STRINGS: [&str; 8] = [
    "",
    "alloc_objects",
    "count",
    "alloc_space",
    "bytes",
    "inuse_objects",
    "inuse_space",
    "space",
];

/// The fixed strings of a window's kind.
fn fixed_strings(kind: ProfileKind) -> &'static [&'static str] {
    match kind {
        ProfileKind::Cpu => &FIXED_STRINGS,
        ProfileKind::Alloc { .. } => &ALLOC_FIXED_STRINGS,
    }
}

/// Go's heap profile: sample types, period type and period.
fn alloc_types() -> (Vec<ValueType>, ValueType) {
    let vt = |r#type, unit| ValueType { r#type, unit };
    (vec![vt(1, 2), vt(3, 4), vt(5, 2), vt(6, 4)], vt(7, 4))
}

/// How to encode a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EncodeOptions {
    /// Nanoseconds between samples: 1e9 / sampling rate in Hz.
    pub period_ns: u64,
    /// Largest uncompressed piece, in bytes (the uploader uses 1 MiB); `None`: no limit.
    pub max_piece_bytes: Option<usize>,
    /// Most samples per piece (the uploader uses 16,000); `None`: no limit.
    pub max_piece_samples: Option<usize>,
}

cfg_internal! {
    impl EncodeOptions {
        /// Options for a sampling rate in Hz, without piece limits.
        pub(crate) fn for_rate(hz: u32) -> Self {
            Self {
                period_ns: 1_000_000_000 / u64::from(hz.max(1)),
                max_piece_bytes: None,
                max_piece_samples: None,
            }
        }
    }
}

/// One complete, independently valid profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedPiece {
    /// The gzipped `Profile` message.
    pub gzipped: Vec<u8>,
    /// Its size before compression.
    pub uncompressed_len: usize,
    /// Its number of samples.
    pub samples: usize,
}

cfg_internal! {
    /// Encodes `window` into one piece, or several when limits are set and exceeded. An
    /// empty window gives no piece.
    pub(crate) fn encode(
        window: &ClosedWindow,
        symbolizer: &mut Symbolizer,
        opts: &EncodeOptions,
    ) -> Vec<EncodedPiece> {
        symbolizer.prepare(crate::symbolize::lookup_addresses(&window.stacks));
        encode_prepared(window, symbolizer, opts)
    }
}

/// Encodes `window` once `symbolizer` has prepared its addresses
/// ([`Symbolizer::prepare`]): from here on the symbolizer mostly answers from its cache.
pub(crate) fn encode_prepared(
    window: &ClosedWindow,
    symbolizer: &mut Symbolizer,
    opts: &EncodeOptions,
) -> Vec<EncodedPiece> {
    if window.samples.is_empty() {
        return Vec::new();
    }
    let tables = Tables::build(window, symbolizer);
    let mut pieces = Vec::new();
    let mut piece = PieceBuilder::new(&tables, window, opts, 1);
    for sample in &window.samples {
        let stack = &tables.stacks[sample.stack as usize];
        let labels = &tables.label_sets[sample.labels as usize];
        if piece.try_add(&tables, stack, labels, sample) {
            continue;
        }
        // Over a limit with at least one sample in the piece: finish it, start the next.
        let next = PieceBuilder::new(&tables, window, opts, piece.generation + 1);
        let full = std::mem::replace(&mut piece, next);
        pieces.extend(full.finish());
        let added = piece.try_add(&tables, stack, labels, sample);
        debug_assert!(added, "an empty piece accepts any sample");
    }
    pieces.extend(piece.finish());
    pieces
}

/// True for a frame of the allocation path itself: this crate's allocator wrapper and
/// recording code, and the global allocator's shims (`__rust_alloc`, `__rdl_alloc`, ...).
/// Allocation stacks are cut below them (never the last frame of a stack, so the markers
/// that stand for dropped records and unknown stacks stay).
fn is_allocator_frame(name: &str) -> bool {
    let name = name.strip_prefix('<').unwrap_or(name);
    if name.starts_with("span_profiler::alloc::") || name.starts_with("span_profiler::sampler::") {
        return true;
    }
    let last = name.rsplit("::").next().unwrap_or(name);
    [
        "__rust_alloc",
        "__rust_realloc",
        "__rust_dealloc",
        "__rdl_",
        "__rg_",
    ]
    .iter()
    .any(|shim| last.starts_with(shim))
}

/// Window-wide tables; indices here are "global" (per window), not piece ids.
struct Tables {
    strings: Vec<Arc<str>>,
    functions: Vec<GFunction>,
    mappings: Vec<GMapping>,
    /// The main program's mapping, when a location is in it.
    main_mapping: Option<u32>,
    locations: Vec<GLocation>,
    /// Per window stack: global location indices, leaf first.
    stacks: Vec<Vec<u32>>,
    /// Per window label set: (key, value) global string indices.
    label_sets: Vec<Vec<(u32, u32)>>,
}

struct GFunction {
    name: u32,
    system_name: u32,
    filename: u32,
    start_line: u32,
}

struct GMapping {
    memory_start: u64,
    memory_limit: u64,
    file_offset: u64,
    filename: u32,
    build_id: u32,
    has_functions: bool,
    has_filenames: bool,
    has_inline_frames: bool,
}

struct GLocation {
    mapping: Option<u32>,
    address: u64,
    /// (global function, line), callee first.
    lines: Vec<(u32, u32)>,
}

#[derive(Default)]
struct Interner {
    strings: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

impl Interner {
    fn get(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        let arc: Arc<str> = Arc::from(s);
        self.strings.push(arc.clone());
        self.index.insert(arc, i);
        i
    }

    fn get_arc(&mut self, s: &Arc<str>) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.strings.len() as u32;
        self.strings.push(s.clone());
        self.index.insert(s.clone(), i);
        i
    }
}

impl Tables {
    fn build(window: &ClosedWindow, symbolizer: &mut Symbolizer) -> Self {
        let mut strings = Interner::default();
        for s in fixed_strings(window.kind) {
            strings.get(s);
        }
        let mut functions = Vec::new();
        let mut function_index: HashMap<(u32, u32, u32, u32), u32> = HashMap::new();
        let mut mappings = Vec::new();
        let mut mapping_index: HashMap<usize, u32> = HashMap::new();
        let mut main_mapping = None;
        let mut locations = Vec::new();
        let mut location_index: HashMap<usize, u32> = HashMap::new();
        let mut stacks = Vec::with_capacity(window.stacks.len());
        // Allocation stacks begin inside the allocator (the global allocator's shim and the
        // wrapper inlined into it): their leaf should be the code that asked for memory.
        let alloc = matches!(window.kind, ProfileKind::Alloc { .. });
        let mut allocator_frames: HashMap<usize, bool> = HashMap::new();
        for frames in &window.stacks {
            let mut stack = Vec::with_capacity(frames.len());
            let mut leading = alloc;
            for (depth, &frame) in frames.iter().enumerate() {
                let addr = lookup_address(depth, frame);
                if leading && depth + 1 < frames.len() {
                    let inside = *allocator_frames.entry(addr).or_insert_with(|| {
                        let sym = symbolizer.symbolize(addr);
                        !sym.frames.is_empty()
                            && sym.frames.iter().all(|f| is_allocator_frame(&f.name))
                    });
                    if inside {
                        continue;
                    }
                }
                leading = false;
                if let Some(&loc) = location_index.get(&addr) {
                    stack.push(loc);
                    continue;
                }
                let sym = symbolizer.symbolize(addr);
                let mapping = sym.module.map(|module| {
                    *mapping_index.entry(module).or_insert_with(|| {
                        let info = symbolizer.mapping_info(module);
                        if info.is_main {
                            main_mapping = Some(mappings.len() as u32);
                        }
                        mappings.push(GMapping {
                            memory_start: info.memory_start,
                            memory_limit: info.memory_limit,
                            file_offset: info.file_offset,
                            filename: strings.get_arc(&info.name),
                            build_id: strings.get_arc(&info.build_id),
                            has_functions: info.has_functions,
                            has_filenames: info.has_filenames,
                            has_inline_frames: info.has_inline_frames,
                        });
                        (mappings.len() - 1) as u32
                    })
                });
                let lines = sym
                    .frames
                    .iter()
                    .map(|f| {
                        let key = (
                            strings.get_arc(&f.name),
                            strings.get_arc(&f.system_name),
                            strings.get_arc(&f.file),
                            f.start_line,
                        );
                        let function = *function_index.entry(key).or_insert_with(|| {
                            functions.push(GFunction {
                                name: key.0,
                                system_name: key.1,
                                filename: key.2,
                                start_line: key.3,
                            });
                            (functions.len() - 1) as u32
                        });
                        (function, f.line)
                    })
                    .collect();
                locations.push(GLocation {
                    mapping,
                    address: addr as u64,
                    lines,
                });
                let loc = (locations.len() - 1) as u32;
                location_index.insert(addr, loc);
                stack.push(loc);
            }
            stacks.push(stack);
        }
        let label_sets = window
            .label_sets
            .iter()
            .map(|set| {
                let mut pairs = Vec::with_capacity(3 + set.pairs.len());
                if let Some(id) = set.span_id {
                    pairs.push((strings.get("span_id"), strings.get(&span_id_hex(id))));
                }
                // An empty value is invalid on the server; label sources never make
                // one, and this keeps it that way.
                if let Some(name) = set.span_name.as_ref().filter(|n| !n.is_empty()) {
                    pairs.push((strings.get("span_name"), strings.get(name)));
                }
                if let (Some(id), true) = (set.trace_id, set.trace_id_label) {
                    pairs.push((strings.get("trace_id"), strings.get(&trace_id_hex(id))));
                }
                for (k, v) in &set.pairs {
                    pairs.push((strings.get(k), strings.get(v)));
                }
                pairs
            })
            .collect();
        Self {
            strings: strings.strings,
            functions,
            mappings,
            main_mapping,
            locations,
            stacks,
            label_sets,
        }
    }
}

/// Global index -> piece id, valid when `stamp` equals the piece's generation; so tables
/// are reused across pieces without clearing.
struct LocalIds {
    stamp: Vec<u32>,
    id: Vec<u32>,
}

impl LocalIds {
    fn new(len: usize) -> Self {
        Self {
            stamp: vec![0; len],
            id: vec![0; len],
        }
    }

    fn get(&self, global: u32, generation: u32) -> Option<u32> {
        let g = global as usize;
        (self.stamp[g] == generation).then(|| self.id[g])
    }

    fn set(&mut self, global: u32, generation: u32, id: u32) {
        self.stamp[global as usize] = generation;
        self.id[global as usize] = id;
    }

    fn unset(&mut self, global: u32) {
        self.stamp[global as usize] = 0;
    }
}

/// What one `try_add` appended, to undo it when the piece overflows.
#[derive(Default)]
struct Undo {
    strings: Vec<u32>,
    functions: Vec<u32>,
    mappings: Vec<u32>,
    locations: Vec<u32>,
}

impl Undo {
    fn clear(&mut self) {
        self.strings.clear();
        self.functions.clear();
        self.mappings.clear();
        self.locations.clear();
    }
}

/// One piece being filled.
///
/// Its samples are encoded as they are added, into `sample_bytes`, through one reused
/// `Sample`: a window has thousands of samples, and three small vectors each, freed at
/// the end, left the encode thread's allocator cache holding chunks scattered over every
/// page the encoding had used, so those pages stayed resident between windows.
struct PieceBuilder {
    generation: u32,
    /// Everything but the samples.
    profile: Profile,
    /// The samples, each encoded as `Profile` field 2.
    sample_bytes: Vec<u8>,
    /// Samples in `sample_bytes`.
    samples: usize,
    /// Reused for each sample added (its vectors keep their capacity).
    scratch: Sample,
    /// Reused by each `try_add`.
    undo: Undo,
    /// Exact encoded length of `profile` with the samples.
    bytes: usize,
    max_bytes: usize,
    max_samples: usize,
    /// Allocation values instead of CPU weights.
    alloc: bool,
    strings: LocalIds,
    functions: LocalIds,
    mappings: LocalIds,
    locations: LocalIds,
}

impl PieceBuilder {
    fn new(tables: &Tables, window: &ClosedWindow, opts: &EncodeOptions, generation: u32) -> Self {
        let time_nanos = window
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let duration_nanos = window
            .end
            .duration_since(window.start)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut profile = Profile {
            sample_type: vec![
                ValueType {
                    r#type: S_SAMPLES,
                    unit: S_COUNT,
                },
                ValueType {
                    r#type: S_CPU,
                    unit: S_NANOSECONDS,
                },
            ],
            string_table: FIXED_STRINGS.iter().map(|s| (*s).to_owned()).collect(),
            time_nanos,
            duration_nanos,
            period_type: Some(ValueType {
                r#type: S_CPU,
                unit: S_NANOSECONDS,
            }),
            period: opts.period_ns as i64,
            ..Profile::default()
        };
        let fixed = fixed_strings(window.kind);
        if let ProfileKind::Alloc { sample_bytes } = window.kind {
            let (types, period_type) = alloc_types();
            profile.sample_type = types;
            profile.period_type = Some(period_type);
            profile.period = sample_bytes as i64;
            profile.string_table = fixed.iter().map(|s| (*s).to_owned()).collect();
        }
        let mut strings = LocalIds::new(tables.strings.len());
        for i in 0..fixed.len() as u32 {
            strings.set(i, generation, i);
        }
        let mut piece = Self {
            generation,
            bytes: profile.encoded_len(),
            profile,
            sample_bytes: Vec::new(),
            samples: 0,
            scratch: Sample::default(),
            undo: Undo::default(),
            max_bytes: opts.max_piece_bytes.unwrap_or(usize::MAX),
            max_samples: opts.max_piece_samples.unwrap_or(usize::MAX).max(1),
            strings,
            alloc: matches!(window.kind, ProfileKind::Alloc { .. }),
            functions: LocalIds::new(tables.functions.len()),
            mappings: LocalIds::new(tables.mappings.len()),
            locations: LocalIds::new(tables.locations.len()),
        };
        // The main program is mapping 1, as in Go's profiles: `go tool pprof` names the
        // profile after the first mapping ("File: shop", not "File: libc.so.6").
        if let Some(main) = tables.main_mapping {
            piece.mapping(tables, main, &mut Undo::default());
        }
        piece
    }

    /// Adds one sample with everything it references. Returns false (and changes
    /// nothing) when that would break a limit and the piece already has samples.
    fn try_add(
        &mut self,
        t: &Tables,
        stack: &[u32],
        labels: &[(u32, u32)],
        from: &WindowSample,
    ) -> bool {
        let had_samples = self.samples > 0;
        if had_samples && self.samples >= self.max_samples {
            return false;
        }
        let before = (
            self.bytes,
            self.profile.string_table.len(),
            self.profile.function.len(),
            self.profile.mapping.len(),
            self.profile.location.len(),
        );
        let mut undo = std::mem::take(&mut self.undo);
        undo.clear();
        let mut sample = std::mem::take(&mut self.scratch);
        sample.location_id.clear();
        for &loc in stack {
            let id = self.location(t, loc, &mut undo);
            sample.location_id.push(u64::from(id));
        }
        sample.label.clear();
        for &(k, v) in labels {
            let label = Label {
                key: self.string(t, k, &mut undo),
                str: self.string(t, v, &mut undo),
                num: 0,
                num_unit: 0,
            };
            sample.label.push(label);
        }
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sample.value.clear();
        if self.alloc {
            sample.value.extend(from.values.iter().map(|&v| int(v)));
        } else {
            let weight = int(from.weight);
            sample.value.push(weight);
            sample
                .value
                .push(weight.saturating_mul(self.profile.period));
        }
        let len = message::encoded_len(2, &sample);
        let fits = !had_samples || self.bytes + len <= self.max_bytes;
        if fits {
            self.bytes += len;
            message::encode(2, &sample, &mut self.sample_bytes);
            self.samples += 1;
        } else {
            self.bytes = before.0;
            self.profile.string_table.truncate(before.1);
            self.profile.function.truncate(before.2);
            self.profile.mapping.truncate(before.3);
            self.profile.location.truncate(before.4);
            undo.strings.iter().for_each(|&g| self.strings.unset(g));
            undo.functions.iter().for_each(|&g| self.functions.unset(g));
            undo.mappings.iter().for_each(|&g| self.mappings.unset(g));
            undo.locations.iter().for_each(|&g| self.locations.unset(g));
        }
        self.scratch = sample;
        self.undo = undo;
        fits
    }

    /// Piece string index of global string `global`, adding it if new.
    fn string(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> i64 {
        if let Some(id) = self.strings.get(global, self.generation) {
            return i64::from(id);
        }
        let id = self.profile.string_table.len() as u32;
        self.strings.set(global, self.generation, id);
        undo.strings.push(global);
        let s = t.strings[global as usize].to_string();
        self.bytes += string::encoded_len(6, &s);
        self.profile.string_table.push(s);
        i64::from(id)
    }

    /// Piece id of global function `global`, adding it if new.
    fn function(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u64 {
        if let Some(id) = self.functions.get(global, self.generation) {
            return u64::from(id);
        }
        let f = &t.functions[global as usize];
        let function = Function {
            id: 0,
            name: self.string(t, f.name, undo),
            system_name: self.string(t, f.system_name, undo),
            filename: self.string(t, f.filename, undo),
            start_line: i64::from(f.start_line),
        };
        let id = self.profile.function.len() as u32 + 1;
        let function = Function {
            id: u64::from(id),
            ..function
        };
        self.functions.set(global, self.generation, id);
        undo.functions.push(global);
        self.bytes += message::encoded_len(5, &function);
        self.profile.function.push(function);
        u64::from(id)
    }

    /// Piece id of global mapping `global`, adding it if new.
    fn mapping(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u64 {
        if let Some(id) = self.mappings.get(global, self.generation) {
            return u64::from(id);
        }
        let m = &t.mappings[global as usize];
        let filename = self.string(t, m.filename, undo);
        let build_id = self.string(t, m.build_id, undo);
        let id = self.profile.mapping.len() as u32 + 1;
        let mapping = Mapping {
            id: u64::from(id),
            memory_start: m.memory_start,
            memory_limit: m.memory_limit,
            file_offset: m.file_offset,
            filename,
            build_id,
            has_functions: m.has_functions,
            has_filenames: m.has_filenames,
            has_line_numbers: m.has_filenames,
            has_inline_frames: m.has_inline_frames,
        };
        self.mappings.set(global, self.generation, id);
        undo.mappings.push(global);
        self.bytes += message::encoded_len(3, &mapping);
        self.profile.mapping.push(mapping);
        u64::from(id)
    }

    /// Piece id of global location `global`, adding it (and what it uses) if new.
    fn location(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u32 {
        if let Some(id) = self.locations.get(global, self.generation) {
            return id;
        }
        let l = &t.locations[global as usize];
        let mapping_id = match l.mapping {
            Some(m) => self.mapping(t, m, undo),
            None => 0,
        };
        let line = l
            .lines
            .iter()
            .map(|&(f, line)| Line {
                function_id: self.function(t, f, undo),
                line: i64::from(line),
                column: 0,
            })
            .collect();
        let id = self.profile.location.len() as u32 + 1;
        let location = Location {
            id: u64::from(id),
            mapping_id,
            address: l.address,
            line,
            is_folded: false,
        };
        self.locations.set(global, self.generation, id);
        undo.locations.push(global);
        self.bytes += message::encoded_len(4, &location);
        self.profile.location.push(location);
        id
    }

    /// Encodes and compresses the piece; `None` for a piece without samples.
    fn finish(self) -> Option<EncodedPiece> {
        if self.samples == 0 {
            return None;
        }
        // The samples after the other fields: a decoder appends a repeated field's
        // elements wherever they come.
        let mut raw = self.profile.encode_to_vec();
        raw.extend_from_slice(&self.sample_bytes);
        debug_assert_eq!(raw.len(), self.bytes, "size tracking must be exact");
        if raw.len() > self.max_bytes {
            ENCODE.pieces_oversized.incr();
        }
        let mut gz = GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            Compression::new(GZIP_LEVEL),
        );
        // Writing into a Vec cannot fail; the error arm only keeps this panic-free.
        let gzipped = match gz.write_all(&raw).and_then(|()| gz.finish()) {
            Ok(bytes) => bytes,
            Err(err) => {
                static LOGGED: LogOnce = LogOnce::new();
                if LOGGED.first() {
                    log::error!(target: "span_profiler", "gzip of a profile failed ({err}); the profile is sent uncompressed");
                }
                raw.clone()
            }
        };
        ENCODE.pieces_encoded.incr();
        Some(EncodedPiece {
            gzipped,
            uncompressed_len: raw.len(),
            samples: self.samples,
        })
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::labels::registry::{LabelHandle, Registry};
    use crate::labels::set::LabelSet;
    use crate::modules::return_addresses_here;
    use crate::pprof::validate::{decode, samples, validate};
    use crate::window::{WindowAggregator, WindowLimits};

    fn register(
        span_id: u64,
        name: &str,
        trace_id: Option<u128>,
        pairs: &[(&str, &str)],
    ) -> LabelHandle {
        let set = LabelSet {
            span_id: Some(span_id),
            span_name: Some(name.to_owned().into()),
            trace_id,
            // Carried (as for OTLP links), not asked for as a label.
            trace_id_label: false,
            pairs: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        Registry::global().register(Arc::new(set))
    }

    #[inline(never)]
    fn encoder_test_leaf() -> Vec<usize> {
        // A real captured stack: this function's return address into the caller, etc.
        let mut frames = return_addresses_here(3);
        frames.insert(0, encoder_test_leaf as *const () as usize + 1);
        frames
    }

    #[inline(never)]
    fn encoder_test_caller() -> Vec<usize> {
        let frames = encoder_test_leaf();
        std::hint::black_box(frames)
    }

    fn decode_all(pieces: &[EncodedPiece]) -> Vec<Profile> {
        pieces
            .iter()
            .map(|p| {
                let profile = decode(&p.gzipped).expect("decodes");
                assert_eq!(profile.encoded_len(), p.uncompressed_len);
                validate(&profile).expect("valid");
                profile
            })
            .collect()
    }

    #[test]
    fn a_window_encodes_as_a_go_style_cpu_profile_that_passes_validation() {
        let frames = encoder_test_caller();
        let labels = register(
            0x00f0_67aa_0ba9_02b7,
            "GET /orders/{id}",
            Some(7),
            &[("region", "eu")],
        );
        let start = SystemTime::now() - Duration::from_secs(10);
        let mut w = WindowAggregator::new(WindowLimits::default(), start);
        w.add(&frames, labels.id(), 3);
        w.add(&frames, 0, 2);
        let window = w.close(start + Duration::from_secs(10));
        let mut symbolizer = Symbolizer::new();
        let pieces = encode(&window, &mut symbolizer, &EncodeOptions::for_rate(100));
        assert_eq!(pieces.len(), 1);
        let p = &decode_all(&pieces)[0];
        let s = |i: i64| p.string_table[i as usize].as_str();
        let types: Vec<_> = p
            .sample_type
            .iter()
            .map(|t| (s(t.r#type), s(t.unit)))
            .collect();
        assert_eq!(types, [("samples", "count"), ("cpu", "nanoseconds")]);
        let period_type = p.period_type.unwrap();
        assert_eq!(
            (s(period_type.r#type), s(period_type.unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 10_000_000);
        assert_eq!(
            p.time_nanos,
            start.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
        );
        assert_eq!(p.duration_nanos, 10_000_000_000);
        assert_eq!(p.mapping[0].id, 1);
        assert!(p.mapping[0].has_functions && p.mapping[0].has_filenames);
        assert_eq!(
            s(p.mapping[0].filename),
            std::env::current_exe().unwrap().display().to_string()
        );
        let views = samples(p);
        assert_eq!(views.len(), 2);
        let labelled = views.iter().find(|v| !v.labels.is_empty()).unwrap();
        assert_eq!(labelled.values, vec![3, 30_000_000]);
        assert_eq!(labelled.labels["span_id"], "00f067aa0ba902b7");
        assert_eq!(labelled.labels["span_name"], "GET /orders/{id}");
        assert_eq!(labelled.labels["region"], "eu");
        assert!(
            !labelled.labels.contains_key("trace_id"),
            "trace ids carried for OTLP are not written"
        );
        assert!(
            labelled.functions[0].ends_with("tests::encoder_test_leaf"),
            "{:?}",
            labelled.functions
        );
        let caller_pos = labelled
            .functions
            .iter()
            .position(|f| f.ends_with("tests::encoder_test_caller"));
        assert!(
            caller_pos.is_some_and(|i| i > 0),
            "callers follow the leaf: {:?}",
            labelled.functions
        );
        let unlabelled = views.iter().find(|v| v.labels.is_empty()).unwrap();
        assert_eq!(unlabelled.values, vec![2, 20_000_000]);
        // The leaf is symbolized at its PC, callers at return address - 1.
        let leaf = &p.location[(p.sample[0].location_id[0] - 1) as usize];
        assert_eq!(leaf.address, frames[0] as u64);
        let caller = &p.location[(p.sample[0].location_id[1] - 1) as usize];
        assert_eq!(caller.address, frames[1] as u64 - 1);
    }

    #[test]
    fn the_main_program_is_the_first_mapping_whatever_was_sampled_first() {
        // The first stack is a C library function alone, the second this binary's code.
        let libc_function = libc::getpid as *const () as usize;
        let start = SystemTime::now() - Duration::from_secs(10);
        let mut w = WindowAggregator::new(WindowLimits::default(), start);
        w.add(&[libc_function], 0, 1);
        w.add(&encoder_test_caller(), 0, 1);
        let window = w.close(start + Duration::from_secs(10));
        let mut symbolizer = Symbolizer::new();
        let pieces = encode(&window, &mut symbolizer, &EncodeOptions::for_rate(100));
        let p = &decode_all(&pieces)[0];
        let file = |m: &Mapping| p.string_table[m.filename as usize].clone();
        assert_eq!(p.mapping.len(), 2, "{:?}", p.mapping);
        assert_eq!(p.mapping[0].id, 1);
        assert_eq!(
            file(&p.mapping[0]),
            std::env::current_exe().unwrap().display().to_string()
        );
        assert!(
            file(&p.mapping[1]).contains("libc"),
            "{}",
            file(&p.mapping[1])
        );
        // The libc location still names its own mapping.
        let leaf = &p.location[(p.sample[0].location_id[0] - 1) as usize];
        assert_eq!(leaf.address, libc_function as u64);
        assert_eq!(leaf.mapping_id, 2);
    }

    #[test]
    fn trace_ids_are_written_only_when_asked() {
        let labels = Registry::global().register(Arc::new(LabelSet {
            span_id: Some(1),
            trace_id: Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736),
            trace_id_label: true,
            ..LabelSet::default()
        }));
        let mut w = WindowAggregator::new(WindowLimits::default(), SystemTime::now());
        w.add(&[encoder_test_leaf as *const () as usize], labels.id(), 1);
        let window = w.close(SystemTime::now());
        let pieces = encode(
            &window,
            &mut Symbolizer::new(),
            &EncodeOptions::for_rate(250),
        );
        let p = &decode_all(&pieces)[0];
        assert_eq!(
            samples(p)[0].labels["trace_id"],
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(p.period, 4_000_000);

        // A trace id carried only for OTLP links is not written.
        let carried = Registry::global().register(Arc::new(LabelSet {
            span_id: Some(2),
            trace_id: Some(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4737),
            ..LabelSet::default()
        }));
        let mut w = WindowAggregator::new(WindowLimits::default(), SystemTime::now());
        w.add(&[encoder_test_leaf as *const () as usize], carried.id(), 1);
        let window = w.close(SystemTime::now());
        let pieces = encode(
            &window,
            &mut Symbolizer::new(),
            &EncodeOptions::for_rate(250),
        );
        let labels = &samples(&decode_all(&pieces)[0])[0].labels;
        assert_eq!(labels["span_id"], "0000000000000002");
        assert!(!labels.contains_key("trace_id"), "{labels:?}");
    }

    #[test]
    fn a_large_window_splits_into_valid_pieces_within_the_limits_and_loses_nothing() {
        let handles: Vec<_> = (0..50)
            .map(|i| register(1000 + i, &format!("route{}", i % 7), None, &[]))
            .collect();
        let base = encoder_test_leaf as *const () as usize;
        let mut w = WindowAggregator::new(WindowLimits::default(), SystemTime::now());
        let mut expected_weight = 0;
        for i in 0..3000usize {
            let frames: Vec<usize> = (0..20).map(|d| base + (i * 7 + d * 13) % 4000).collect();
            let weight = (i % 5 + 1) as u64;
            expected_weight += weight;
            w.add(&frames, handles[i % handles.len()].id(), weight);
        }
        let window = w.close(SystemTime::now());
        let opts = EncodeOptions {
            max_piece_bytes: Some(64 * 1024),
            max_piece_samples: Some(1000),
            ..EncodeOptions::for_rate(100)
        };
        let pieces = encode(&window, &mut Symbolizer::new(), &opts);
        assert!(pieces.len() >= 3, "{} pieces", pieces.len());
        let profiles = decode_all(&pieces);
        let mut count = 0;
        let mut cpu = 0;
        let mut sample_total = 0;
        for (piece, p) in pieces.iter().zip(&profiles) {
            assert!(
                piece.uncompressed_len <= 64 * 1024,
                "{}",
                piece.uncompressed_len
            );
            assert!(p.sample.len() <= 1000);
            assert_eq!(p.sample.len(), piece.samples);
            sample_total += p.sample.len();
            for s in &p.sample {
                count += s.value[0];
                cpu += s.value[1];
            }
        }
        assert_eq!(sample_total, window.samples.len());
        assert_eq!(count as u64, expected_weight);
        assert_eq!(cpu as u64, expected_weight * 10_000_000);
    }

    #[test]
    fn a_sample_too_large_for_the_byte_limit_is_sent_alone_and_counted() {
        let base = encoder_test_leaf as *const () as usize;
        let mut w = WindowAggregator::new(WindowLimits::default(), SystemTime::now());
        w.add(&[base, base + 1], 0, 1);
        w.add(&[base + 2, base + 3], 0, 1);
        let window = w.close(SystemTime::now());
        let before = ENCODE.pieces_oversized.get();
        let opts = EncodeOptions {
            max_piece_bytes: Some(10),
            ..EncodeOptions::for_rate(100)
        };
        let pieces = encode(&window, &mut Symbolizer::new(), &opts);
        assert_eq!(pieces.len(), 2);
        assert!(ENCODE.pieces_oversized.get() >= before + 2);
        decode_all(&pieces);
    }

    #[test]
    fn an_empty_window_gives_no_piece() {
        let window = WindowAggregator::new(WindowLimits::default(), SystemTime::now())
            .close(SystemTime::now());
        assert!(encode(
            &window,
            &mut Symbolizer::new(),
            &EncodeOptions::for_rate(100)
        )
        .is_empty());
    }

    #[test]
    fn allocator_frames_are_the_wrapper_its_recording_path_and_the_global_shims() {
        for name in [
            "<span_profiler::alloc::ProfiledAllocator as core::alloc::global::GlobalAlloc>::alloc",
            "span_profiler::alloc::sampled",
            "span_profiler::sampler::linux::here::stack_here",
            "__rustc::__rust_alloc",
            "__rust_realloc",
            "__rdl_alloc_zeroed",
        ] {
            assert!(is_allocator_frame(name), "{name}");
        }
        for name in [
            "alloc::raw_vec::RawVecInner::finish_grow",
            "<alloc::vec::Vec as core::clone::Clone>::clone",
            "app::handlers::report",
            "my_alloc_service::rust_alloc_stats",
        ] {
            assert!(!is_allocator_frame(name), "{name}");
        }
    }
}
