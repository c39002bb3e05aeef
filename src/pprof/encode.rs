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
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::time::UNIX_EPOCH;

use flate2::write::GzEncoder;
use flate2::Compression;
use hashbrown::HashTable;
use prost::encoding::{self, message, WireType};
use prost::Message;

use crate::counters::LogOnce;
use crate::labels::set::{span_id_digits, trace_id_digits};
use crate::map_vec::MapVec;
use crate::pprof::proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use crate::pprof::ENCODE;
use crate::symbolize::{lookup_address, Symbolizer};
use crate::window::{ClosedWindow, ProfileKind, WindowSample};

/// gzip level: Go's `runtime/pprof` writes with `gzip.BestSpeed` too.
const GZIP_LEVEL: u32 = 1;

/// `Profile`'s field numbers of its repeated fields.
const SAMPLE_TAG: u32 = 2;
const MAPPING_TAG: u32 = 3;
const LOCATION_TAG: u32 = 4;
const FUNCTION_TAG: u32 = 5;
const STRING_TABLE_TAG: u32 = 6;

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
    let mut piece = PieceBuilder::new(&tables, window, opts, 1, Scratch::default());
    for sample in &window.samples {
        let stack = tables.stacks.get(sample.stack as usize);
        let labels = tables.label_sets.get(sample.labels as usize);
        if piece.try_add(&tables, stack, labels, sample) {
            continue;
        }
        // Over a limit with at least one sample in the piece: finish it, start the next.
        let scratch = std::mem::take(&mut piece.scratch);
        let next = PieceBuilder::new(&tables, window, opts, piece.generation + 1, scratch);
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

/// Smallest capacity of the encoder's hash tables: tables sized from the start past the
/// allocator's small sizes (see [`PieceBuilder`] for why).
const MIN_TABLE: usize = 64;

/// Window-wide tables; indices here are "global" (per window), not piece ids. What grows
/// with the window lives in [`MapVec`]s (see [`PieceBuilder`] for why).
struct Tables {
    strings: Strings,
    functions: MapVec<GFunction>,
    mappings: Vec<GMapping>,
    /// The main program's mapping, when a location is in it.
    main_mapping: Option<u32>,
    locations: MapVec<GLocation>,
    /// Per location: (global function, line), callee first.
    lines: Lists<(u32, u32)>,
    /// Per window stack: global location indices, leaf first.
    stacks: Lists<u32>,
    /// Per window label set: (key, value) global string indices.
    label_sets: Lists<(u32, u32)>,
}

#[derive(Clone, Copy)]
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

#[derive(Clone, Copy)]
struct GLocation {
    mapping: Option<u32>,
    address: u64,
}

/// Lists of `T` stored one after another: list `i` is `items[ends[i - 1]..ends[i]]`.
struct Lists<T: Copy> {
    items: MapVec<T>,
    /// Where each list ends in `items`.
    ends: MapVec<usize>,
}

impl<T: Copy> Lists<T> {
    fn new() -> Self {
        Self {
            items: MapVec::new(),
            ends: MapVec::new(),
        }
    }

    /// Adds `item` to the list being built.
    fn push(&mut self, item: T) {
        self.items.push(item);
    }

    /// Ends the list being built (with what was pushed since the last end).
    fn end_list(&mut self) {
        self.ends.push(self.items.len());
    }

    /// List `i`, which must have ended.
    fn get(&self, i: usize) -> &[T] {
        let start = match i {
            0 => 0,
            i => self.ends[i - 1],
        };
        &self.items[start..self.ends[i]]
    }
}

/// The window's strings, each stored once: their bytes one after another in one array,
/// found again through a hash table of their indices.
struct Strings {
    text: MapVec<u8>,
    /// Per string: where its bytes start and end in `text`.
    spans: MapVec<(usize, usize)>,
    /// String indices, by the hash of their bytes.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Strings {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            text: MapVec::new(),
            spans: MapVec::new(),
            index: HashTable::with_capacity(capacity),
            hasher: RandomState::new(),
        }
    }

    /// The bytes of string `i`.
    fn bytes(&self, i: u32) -> &[u8] {
        let (start, end) = self.spans[i as usize];
        &self.text[start..end]
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// The index of `s`, added if new.
    fn get(&mut self, s: &[u8]) -> u32 {
        let Self {
            text,
            spans,
            index,
            hasher,
        } = self;
        let bytes_of = |i: u32| {
            let (start, end) = spans[i as usize];
            &text[start..end]
        };
        let hash = hasher.hash_one(s);
        if let Some(&i) = index.find(hash, |&i| bytes_of(i) == s) {
            return i;
        }
        let i = spans.len() as u32;
        index.insert_unique(hash, i, |&j| hasher.hash_one(bytes_of(j)));
        let start = text.len();
        text.extend_from_slice(s);
        spans.push((start, text.len()));
        i
    }
}

impl Tables {
    fn build(window: &ClosedWindow, symbolizer: &mut Symbolizer) -> Self {
        let distinct = window.stacks.len().max(MIN_TABLE);
        let mut strings = Strings::with_capacity(distinct);
        for s in fixed_strings(window.kind) {
            strings.get(s.as_bytes());
        }
        let mut functions = MapVec::new();
        let mut function_index: HashMap<(u32, u32, u32, u32), u32> =
            HashMap::with_capacity(distinct);
        let mut mappings = Vec::new();
        let mut mapping_index: HashMap<usize, u32> = HashMap::with_capacity(MIN_TABLE);
        let mut main_mapping = None;
        let mut locations = MapVec::new();
        let mut lines = Lists::new();
        let mut location_index: HashMap<usize, u32> = HashMap::with_capacity(distinct);
        let mut stacks = Lists::new();
        // Allocation stacks begin inside the allocator (the global allocator's shim and the
        // wrapper inlined into it): their leaf should be the code that asked for memory.
        let alloc = matches!(window.kind, ProfileKind::Alloc { .. });
        let mut allocator_frames: HashMap<usize, bool> = match alloc {
            true => HashMap::with_capacity(MIN_TABLE),
            false => HashMap::new(),
        };
        for frames in &window.stacks {
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
                    stacks.push(loc);
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
                            filename: strings.get(info.name.as_bytes()),
                            build_id: strings.get(info.build_id.as_bytes()),
                            has_functions: info.has_functions,
                            has_filenames: info.has_filenames,
                            has_inline_frames: info.has_inline_frames,
                        });
                        (mappings.len() - 1) as u32
                    })
                });
                for f in &sym.frames {
                    let key = (
                        strings.get(f.name.as_bytes()),
                        strings.get(f.system_name.as_bytes()),
                        strings.get(f.file.as_bytes()),
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
                    lines.push((function, f.line));
                }
                lines.end_list();
                locations.push(GLocation {
                    mapping,
                    address: addr as u64,
                });
                let loc = (locations.len() - 1) as u32;
                location_index.insert(addr, loc);
                stacks.push(loc);
            }
            stacks.end_list();
        }
        let mut label_sets = Lists::new();
        let (span_id, span_name, trace_id) = (
            strings.get(b"span_id"),
            strings.get(b"span_name"),
            strings.get(b"trace_id"),
        );
        for set in &window.label_sets {
            if let Some(id) = set.span_id {
                label_sets.push((span_id, strings.get(&span_id_digits(id))));
            }
            // An empty value is invalid on the server; label sources never make one, and
            // this keeps it that way.
            if let Some(name) = set.span_name.as_ref().filter(|n| !n.is_empty()) {
                label_sets.push((span_name, strings.get(name.as_bytes())));
            }
            if let (Some(id), true) = (set.trace_id, set.trace_id_label) {
                label_sets.push((trace_id, strings.get(&trace_id_digits(id))));
            }
            for (k, v) in &set.pairs {
                label_sets.push((strings.get(k.as_bytes()), strings.get(v.as_bytes())));
            }
            label_sets.end_list();
        }
        Self {
            strings,
            functions,
            mappings,
            main_mapping,
            locations,
            lines,
            stacks,
            label_sets,
        }
    }
}

/// Global index -> piece id, valid when its stamp equals the piece's generation.
struct LocalIds {
    /// (stamp, id) per global index.
    ids: MapVec<(u32, u32)>,
}

impl LocalIds {
    fn new(len: usize) -> Self {
        Self {
            ids: MapVec::filled(len, (0, 0)),
        }
    }

    fn get(&self, global: u32, generation: u32) -> Option<u32> {
        let (stamp, id) = self.ids[global as usize];
        (stamp == generation).then_some(id)
    }

    fn set(&mut self, global: u32, generation: u32, id: u32) {
        self.ids[global as usize] = (generation, id);
    }

    fn unset(&mut self, global: u32) {
        self.ids[global as usize].0 = 0;
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

/// Buffers reused for every element a window's pieces encode, handed from piece to piece.
#[derive(Default)]
struct Scratch {
    /// One element, encoded before it is appended to its section.
    record: Vec<u8>,
    sample: Sample,
    /// A location's lines.
    lines: Vec<Line>,
    undo: Undo,
}

/// One repeated field of a piece: its elements, encoded one after another as that field
/// of `Profile`.
struct Section {
    bytes: MapVec<u8>,
    count: u32,
}

impl Section {
    fn new() -> Self {
        Self {
            bytes: MapVec::new(),
            count: 0,
        }
    }

    /// Appends one element, which `encode` writes into `record` (cleared first).
    fn add(&mut self, record: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
        record.clear();
        encode(record);
        self.bytes.extend_from_slice(record);
        self.count += 1;
    }

    /// Appends string `s` as `Profile.string_table`.
    fn add_string(&mut self, record: &mut Vec<u8>, s: &[u8]) {
        self.add(record, |r| {
            encoding::encode_key(STRING_TABLE_TAG, WireType::LengthDelimited, r);
            encoding::encode_varint(s.len() as u64, r);
            r.extend_from_slice(s);
        })
    }

    /// Where the section ends now, for [`Section::reset`].
    fn mark(&self) -> (usize, u32) {
        (self.bytes.len(), self.count)
    }

    /// Drops what was appended since `mark`.
    fn reset(&mut self, (len, count): (usize, u32)) {
        self.bytes.truncate(len);
        self.count = count;
    }
}

/// One piece being filled.
///
/// Every repeated field (mappings, locations, functions, strings, samples) is encoded as
/// its elements are added, each into a [`Section`] of its own, and the piece is those
/// sections after the profile's other fields: a decoder appends a repeated field's
/// elements wherever they come. Elements are encoded through reused buffers
/// ([`Scratch`]), and what grows with the window is in [`MapVec`]s, so a window's
/// encoding makes a few dozen heap blocks, not one or more per sample, string and
/// location. That matters on glibc: freed small blocks stay in the encode thread's cache
/// (7 of each size), counted as in use, and after tens of thousands of them a window left
/// that cache's blocks scattered over the pages the encoding had used, which then stayed
/// resident; the process's resident set crept up window after window.
struct PieceBuilder {
    generation: u32,
    /// The profile's own fields; its repeated tables stay empty (they are the sections).
    header: Profile,
    mappings: Section,
    locations: Section,
    functions: Section,
    strings: Section,
    samples: Section,
    scratch: Scratch,
    /// Encoded length of `header`; the piece's is this plus its sections' (see `len`).
    header_len: usize,
    max_bytes: usize,
    max_samples: usize,
    /// Allocation values instead of CPU weights.
    alloc: bool,
    string_ids: LocalIds,
    function_ids: LocalIds,
    mapping_ids: LocalIds,
    location_ids: LocalIds,
}

impl PieceBuilder {
    fn new(
        tables: &Tables,
        window: &ClosedWindow,
        opts: &EncodeOptions,
        generation: u32,
        scratch: Scratch,
    ) -> Self {
        let time_nanos = window
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let duration_nanos = window
            .end
            .duration_since(window.start)
            .map_or(0, |d| d.as_nanos() as i64);
        let mut header = Profile {
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
            time_nanos,
            duration_nanos,
            period_type: Some(ValueType {
                r#type: S_CPU,
                unit: S_NANOSECONDS,
            }),
            period: opts.period_ns as i64,
            ..Profile::default()
        };
        if let ProfileKind::Alloc { sample_bytes } = window.kind {
            let (types, period_type) = alloc_types();
            header.sample_type = types;
            header.period_type = Some(period_type);
            header.period = sample_bytes as i64;
        }
        let mut piece = Self {
            generation,
            header_len: header.encoded_len(),
            header,
            mappings: Section::new(),
            locations: Section::new(),
            functions: Section::new(),
            strings: Section::new(),
            samples: Section::new(),
            scratch,
            max_bytes: opts.max_piece_bytes.unwrap_or(usize::MAX),
            max_samples: opts.max_piece_samples.unwrap_or(usize::MAX).max(1),
            alloc: matches!(window.kind, ProfileKind::Alloc { .. }),
            string_ids: LocalIds::new(tables.strings.len()),
            function_ids: LocalIds::new(tables.functions.len()),
            mapping_ids: LocalIds::new(tables.mappings.len()),
            location_ids: LocalIds::new(tables.locations.len()),
        };
        let mut undo = std::mem::take(&mut piece.scratch.undo);
        // The fixed strings first, at the indices the header uses.
        for i in 0..fixed_strings(window.kind).len() as u32 {
            piece.string(tables, i, &mut undo);
        }
        // The main program is mapping 1, as in Go's profiles: `go tool pprof` names the
        // profile after the first mapping ("File: shop", not "File: libc.so.6").
        if let Some(main) = tables.main_mapping {
            piece.mapping(tables, main, &mut undo);
        }
        undo.clear();
        piece.scratch.undo = undo;
        piece
    }

    /// The piece's exact encoded length so far: the header and every section.
    fn len(&self) -> usize {
        let sections: usize = self.sections().iter().map(|s| s.bytes.len()).sum();
        self.header_len + sections
    }

    /// The sections in the order the piece writes them after its header.
    fn sections(&self) -> [&Section; 5] {
        [
            &self.mappings,
            &self.locations,
            &self.functions,
            &self.strings,
            &self.samples,
        ]
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
        let had_samples = self.samples.count > 0;
        if had_samples && self.samples.count as usize >= self.max_samples {
            return false;
        }
        let before = (
            self.strings.mark(),
            self.functions.mark(),
            self.mappings.mark(),
            self.locations.mark(),
        );
        let mut undo = std::mem::take(&mut self.scratch.undo);
        undo.clear();
        let mut sample = std::mem::take(&mut self.scratch.sample);
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
            sample.value.push(weight.saturating_mul(self.header.period));
        }
        let len = message::encoded_len(SAMPLE_TAG, &sample);
        let fits = !had_samples || self.len() + len <= self.max_bytes;
        if fits {
            self.samples.add(&mut self.scratch.record, |r| {
                message::encode(SAMPLE_TAG, &sample, r)
            });
        } else {
            self.strings.reset(before.0);
            self.functions.reset(before.1);
            self.mappings.reset(before.2);
            self.locations.reset(before.3);
            undo.strings.iter().for_each(|&g| self.string_ids.unset(g));
            undo.functions
                .iter()
                .for_each(|&g| self.function_ids.unset(g));
            undo.mappings
                .iter()
                .for_each(|&g| self.mapping_ids.unset(g));
            undo.locations
                .iter()
                .for_each(|&g| self.location_ids.unset(g));
        }
        self.scratch.sample = sample;
        self.scratch.undo = undo;
        fits
    }

    /// Piece string index of global string `global`, adding it if new.
    fn string(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> i64 {
        if let Some(id) = self.string_ids.get(global, self.generation) {
            return i64::from(id);
        }
        let id = self.strings.count;
        self.string_ids.set(global, self.generation, id);
        undo.strings.push(global);
        self.strings
            .add_string(&mut self.scratch.record, t.strings.bytes(global));
        i64::from(id)
    }

    /// Piece id of global function `global`, adding it if new.
    fn function(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u64 {
        if let Some(id) = self.function_ids.get(global, self.generation) {
            return u64::from(id);
        }
        let f = t.functions[global as usize];
        let name = self.string(t, f.name, undo);
        let system_name = self.string(t, f.system_name, undo);
        let filename = self.string(t, f.filename, undo);
        let id = self.functions.count + 1;
        let function = Function {
            id: u64::from(id),
            name,
            system_name,
            filename,
            start_line: i64::from(f.start_line),
        };
        self.function_ids.set(global, self.generation, id);
        undo.functions.push(global);
        self.functions.add(&mut self.scratch.record, |r| {
            message::encode(FUNCTION_TAG, &function, r)
        });
        u64::from(id)
    }

    /// Piece id of global mapping `global`, adding it if new.
    fn mapping(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u64 {
        if let Some(id) = self.mapping_ids.get(global, self.generation) {
            return u64::from(id);
        }
        let m = &t.mappings[global as usize];
        let filename = self.string(t, m.filename, undo);
        let build_id = self.string(t, m.build_id, undo);
        let id = self.mappings.count + 1;
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
        self.mapping_ids.set(global, self.generation, id);
        undo.mappings.push(global);
        self.mappings.add(&mut self.scratch.record, |r| {
            message::encode(MAPPING_TAG, &mapping, r)
        });
        u64::from(id)
    }

    /// Piece id of global location `global`, adding it (and what it uses) if new.
    fn location(&mut self, t: &Tables, global: u32, undo: &mut Undo) -> u32 {
        if let Some(id) = self.location_ids.get(global, self.generation) {
            return id;
        }
        let l = t.locations[global as usize];
        let mapping_id = match l.mapping {
            Some(m) => self.mapping(t, m, undo),
            None => 0,
        };
        let mut line = std::mem::take(&mut self.scratch.lines);
        line.clear();
        for &(f, number) in t.lines.get(global as usize) {
            line.push(Line {
                function_id: self.function(t, f, undo),
                line: i64::from(number),
                column: 0,
            });
        }
        let id = self.locations.count + 1;
        let location = Location {
            id: u64::from(id),
            mapping_id,
            address: l.address,
            line,
            is_folded: false,
        };
        self.location_ids.set(global, self.generation, id);
        undo.locations.push(global);
        self.locations.add(&mut self.scratch.record, |r| {
            message::encode(LOCATION_TAG, &location, r)
        });
        self.scratch.lines = location.line;
        id
    }

    /// Encodes and compresses the piece; `None` for a piece without samples.
    fn finish(mut self) -> Option<EncodedPiece> {
        if self.samples.count == 0 {
            return None;
        }
        let mut raw = MapVec::new();
        let mut header = std::mem::take(&mut self.scratch.record);
        header.clear();
        // Encoding into a `Vec` cannot fail (it grows as needed).
        let _ = self.header.encode(&mut header);
        raw.extend_from_slice(&header);
        for section in self.sections() {
            raw.extend_from_slice(&section.bytes);
        }
        debug_assert_eq!(raw.len(), self.len(), "the header encodes to `header_len`");
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
                raw.to_vec()
            }
        };
        ENCODE.pieces_encoded.incr();
        Some(EncodedPiece {
            gzipped,
            uncompressed_len: raw.len(),
            samples: self.samples.count as usize,
        })
    }
}

#[cfg(all(test, not(span_profiler_loom)))]
mod tests {
    use std::sync::Arc;
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
