//! DWARF read per compilation unit, only for the units holding addresses that were looked
//! up, and forgotten again when the symbolizer's budget needs the room.
//!
//! Opening a module builds a small index, address range to unit (24 bytes per range of
//! adjacent code). The first lookup in a unit parses that unit alone: its line table
//! (packed to about 4 bytes a row, see [`lines`](crate::symbolize::lines)) and its
//! functions' code ranges with where their entries are (24 bytes each). Inlined calls are read per lookup, from the one function holding the
//! address, and their names are kept once read: most of a unit's inlined calls (tens of
//! thousands in a large Rust unit) are never sampled. A parsed unit can be dropped at any
//! time ([`DwarfUnits::evict_to`]) and is parsed again on its next lookup.

use std::collections::HashMap;
use std::sync::Arc;

use gimli::{AttributeValue, EndianSlice, RunTimeEndian};

use crate::id_hash::IdHashBuilder;
use crate::map_vec::MapVec;
use crate::symbolize::lines::{LineTable, Row, END};
use crate::symbolize::objfile::ObjectFile;
use crate::symbolize::strings::{string_bytes, StringSet};
use crate::symbolize::{allocation_bytes, table_bytes, vec_bytes};

type Reader<'a> = EndianSlice<'a, RunTimeEndian>;
type Dwarf<'a> = gimli::Dwarf<Reader<'a>>;
type Unit<'a> = gimli::Unit<Reader<'a>>;

/// Code addresses `[begin, begin + len)` belonging to unit `unit` (16 bytes).
#[derive(Debug, Clone, Copy)]
struct UnitRange {
    begin: u64,
    len: u32,
    unit: u32,
}

impl UnitRange {
    fn end(&self) -> u64 {
        self.begin + u64::from(self.len)
    }
}

/// One unit: where it is, and its parsed form while it is kept.
#[derive(Debug)]
struct UnitSlot {
    /// Offset of its header in `.debug_info`.
    offset: usize,
    parsed: Option<Box<ParsedUnit>>,
    /// Value of [`DwarfUnits::clock`] at the last lookup (for least-recently-used eviction).
    last_used: u64,
    /// The symbolizer's window of the last lookup (see [`DwarfUnits::drop_unused_since`]).
    last_window: u32,
}

/// Units indexed between two releases of the file's pages: each unit header read maps a
/// few pages (and the kernel maps neighbours with them), so they are given back often.
const RELEASE_EVERY_UNITS: usize = 16;

/// `.debug_info` bytes read between two releases of the file's pages while parsing one
/// (large) unit: bounds the file pages one parse adds to the resident set, without giving
/// back (and faulting in again) the abbreviation and range pages every few entries.
const RELEASE_EVERY_BYTES: usize = 4 << 20;

/// What one scattered read of the mapped file can make resident: the kernel maps up to
/// 16 neighbouring cached pages with each fault ("fault-around"; `MADV_RANDOM` does not
/// stop it), so a lookup that reads a few entries and a name counts as this much.
const FAULT_AROUND_BYTES: usize = 64 << 10;

/// One code range of a function, and where its entry is.
#[derive(Debug, Clone, Copy)]
struct Function {
    begin: u64,
    end: u64,
    /// Unit offset of its `DW_TAG_subprogram` entry.
    entry: usize,
}

/// One inlined call holding a looked-up address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InlinedCall {
    /// `.debug_info` offset of the entry its name is read from ([`NO_ORIGIN`]: none).
    origin: usize,
    /// Line-table file index of the call site, if given.
    call_file: Option<u64>,
    call_line: u32,
}

/// `InlinedCall::origin` of a call without `DW_AT_abstract_origin`.
const NO_ORIGIN: usize = usize::MAX;

/// The DWARF name of an inlined function.
#[derive(Debug, Clone)]
pub(crate) struct DwarfName {
    /// `DW_AT_name`: the short name (`poll`, `{closure#0}`), empty when absent.
    pub(crate) name: Arc<str>,
    /// `DW_AT_linkage_name`: the mangled full name (full debug info only).
    pub(crate) linkage: Option<Arc<str>>,
}

/// What parsing one unit gave.
#[derive(Debug, Default)]
struct ParsedUnit {
    /// Offset of the unit's header in `.debug_info`.
    offset: usize,
    /// What reading the unit's entries again needs, kept so that a lookup does not parse
    /// the abbreviations and the line program's header again.
    bases: Option<UnitBases>,
    /// Source paths, absolute where the debug info allows: every file of the line table
    /// (shared with the other units, see [`DwarfUnits`]' `paths`).
    files: Vec<Arc<str>>,
    file_ids: FileIds,
    /// The line table, packed.
    lines: LineTable,
    /// Sorted by `begin`.
    functions: Vec<Function>,
    /// Names of inlined functions read so far, by the `.debug_info` offset they were read
    /// from.
    names: HashMap<usize, DwarfName, IdHashBuilder>,
    /// Heap bytes of all of the above but the slots of `names` (see
    /// [`ParsedUnit::heap_bytes`]).
    bytes: usize,
    /// `.debug_info` bytes of the unit's entries.
    entry_bytes: usize,
}

/// The parts of a `gimli::Unit` that do not borrow the file.
#[derive(Debug)]
struct UnitBases {
    abbreviations: Arc<gimli::Abbreviations>,
    low_pc: u64,
    str_offsets_base: gimli::DebugStrOffsetsBase,
    addr_base: gimli::DebugAddrBase,
    loclists_base: gimli::DebugLocListsBase,
    rnglists_base: gimli::DebugRngListsBase,
}

/// Attribute specifications gimli keeps inside an abbreviation; more go to a vector.
const INLINE_ATTRIBUTES: usize = 5;

/// Heap bytes of a unit's parsed abbreviations, as gimli keeps them: codes numbered from 1
/// (densely, as compilers write them) in one vector grown by doubling, each abbreviation
/// with more than [`INLINE_ATTRIBUTES`] specifications in a vector of its own (grown from
/// five by doubling), the whole behind an `Arc`.
fn abbreviations_bytes(abbreviations: &gimli::Abbreviations) -> usize {
    let mut count = 0usize;
    let mut spilled = 0;
    while let Some(abbreviation) = abbreviations.get(count as u64 + 1) {
        count += 1;
        let specs = abbreviation.attributes().len();
        if specs > INLINE_ATTRIBUTES {
            let mut capacity = INLINE_ATTRIBUTES;
            while capacity < specs {
                capacity *= 2;
            }
            spilled +=
                allocation_bytes(capacity * std::mem::size_of::<gimli::AttributeSpecification>());
        }
    }
    let slots = count.next_power_of_two().max(4);
    allocation_bytes(std::mem::size_of::<gimli::Abbreviations>() + 2 * std::mem::size_of::<usize>())
        + allocation_bytes(slots * std::mem::size_of::<gimli::Abbreviation>())
        + spilled
}

/// One frame found in DWARF, innermost first.
#[derive(Debug, Clone)]
pub(crate) struct DwarfFrame {
    /// `None` for the outermost frame (the function itself: its name comes from the
    /// symbol table).
    pub(crate) inlined: Option<DwarfName>,
    pub(crate) file: Option<Arc<str>>,
    pub(crate) line: u32,
}

/// The per-unit DWARF of one module.
#[derive(Debug)]
pub(crate) struct DwarfUnits {
    /// Sorted by `begin`, adjacent ranges of one unit merged.
    ranges: Vec<UnitRange>,
    units: Vec<UnitSlot>,
    /// `.debug_info` offsets of every unit header, ascending (to find the unit of a
    /// cross-unit reference).
    headers: Vec<usize>,
    clock: u64,
    /// `.debug_info` bytes lookups read entries from since the file's pages were last
    /// given back.
    unreleased: usize,
    /// Bytes of the parsed units kept now (their shared source paths apart).
    parsed_bytes: usize,
    /// The source paths the parsed units name, one copy each: the units of a Rust binary
    /// name the same standard-library and dependency files again and again (about 16,000
    /// paths in 421 units of this crate's test binary, 2,079 of them distinct).
    paths: StringSet,
}

/// Tallies of one lookup, for the symbolizer's counters.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ParseCount {
    /// Units parsed by this lookup (0 or 1).
    pub(crate) units_parsed: u64,
    /// Units whose DWARF could not be parsed (the address keeps its symbol-table name).
    pub(crate) errors: u64,
}

impl DwarfUnits {
    /// Indexes the units of `file`'s DWARF (their address ranges only).
    pub(crate) fn index(file: &ObjectFile) -> Self {
        Self::index_units(file, true)
    }

    /// [`Self::index`], reading each unit's ranges from its root entry alone (`root_only`,
    /// see [`root_unit`]) or from a whole `gimli::Unit` (what a unit the shortcut cannot
    /// read falls back to).
    fn index_units(file: &ObjectFile, root_only: bool) -> Self {
        let dwarf = load(file);
        let debug_abbrev = file.section(gimli::SectionId::DebugAbbrev);
        let mut ranges = Vec::new();
        let mut units = Vec::new();
        let mut offsets = Vec::new();
        let mut headers = dwarf.units();
        while let Ok(Some(header)) = headers.next() {
            // `units()` walks `.debug_info`: its offsets are section offsets there.
            let offset = header.offset().0;
            offsets.push(offset);
            if offsets.len() % RELEASE_EVERY_UNITS == 0 {
                file.release_pages();
            }
            let root = if root_only {
                root_unit(&dwarf, debug_abbrev, file.endian(), header)
            } else {
                None
            };
            let Some(unit) = root.or_else(|| dwarf.unit(header).ok()) else {
                continue;
            };
            let index = units.len() as u32;
            let mut found = false;
            if let Ok(mut iter) = dwarf.unit_ranges(&unit) {
                while let Ok(Some(r)) = iter.next() {
                    if r.begin < r.end {
                        // A range longer than 4 GiB is split (never seen in practice).
                        let mut begin = r.begin;
                        while begin < r.end {
                            let len = (r.end - begin).min(u64::from(u32::MAX));
                            ranges.push(UnitRange {
                                begin,
                                len: len as u32,
                                unit: index,
                            });
                            begin += len;
                        }
                        found = true;
                    }
                }
            }
            if found {
                units.push(UnitSlot {
                    offset,
                    parsed: None,
                    last_used: 0,
                    last_window: 0,
                });
            }
        }
        ranges.sort_by_key(|r| r.begin);
        // Merge neighbours of the same unit (a unit's functions usually lie together).
        let mut merged: Vec<UnitRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last)
                    if last.unit == r.unit
                        && r.begin <= last.end().saturating_add(64)
                        && r.end().max(last.end()) - last.begin <= u64::from(u32::MAX) =>
                {
                    last.len = (r.end().max(last.end()) - last.begin) as u32;
                }
                _ => merged.push(r),
            }
        }
        merged.shrink_to_fit();
        units.shrink_to_fit();
        offsets.shrink_to_fit();
        Self {
            ranges: merged,
            units,
            headers: offsets,
            clock: 0,
            unreleased: 0,
            parsed_bytes: 0,
            paths: StringSet::default(),
        }
    }

    /// Heap bytes: the index plus the units parsed and kept.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.index_bytes() + self.kept_bytes()
    }

    /// Bytes of the index alone (what stays after every unit is evicted).
    pub(crate) fn index_bytes(&self) -> usize {
        vec_bytes(&self.ranges) + vec_bytes(&self.units) + vec_bytes(&self.headers)
    }

    /// Bytes of the parsed units kept and the source paths they name.
    fn kept_bytes(&self) -> usize {
        self.parsed_bytes + self.paths.heap_bytes()
    }

    /// Units parsed and kept now.
    pub(crate) fn parsed_units(&self) -> usize {
        self.units.iter().filter(|u| u.parsed.is_some()).count()
    }

    /// Drops the parsed units last used before window `first`. Returns how many.
    pub(crate) fn drop_unused_since(&mut self, first: u32) -> u64 {
        let mut dropped = 0;
        for slot in &mut self.units {
            if slot.last_window < first {
                if let Some(parsed) = slot.parsed.take() {
                    self.parsed_bytes -= parsed.heap_bytes();
                    dropped += 1;
                }
            }
        }
        if dropped > 0 {
            self.paths.sweep();
        }
        dropped
    }

    /// Drops parsed units, least recently used first, until at most `limit` bytes of
    /// parsed state (paths included) are kept. Returns how many were dropped.
    pub(crate) fn evict_to(&mut self, limit: usize) -> u64 {
        let mut dropped = 0;
        while self.kept_bytes() > limit {
            let oldest = self
                .units
                .iter_mut()
                .filter(|u| u.parsed.is_some())
                .min_by_key(|u| u.last_used);
            let Some(slot) = oldest else { break };
            if let Some(parsed) = slot.parsed.take() {
                self.parsed_bytes -= parsed.heap_bytes();
                dropped += 1;
            }
            self.paths.sweep();
        }
        dropped
    }

    /// The frames at file address `addr`, innermost first, ending with the function's
    /// own frame (its file and line; its name is the caller's to find). Empty when no
    /// unit covers `addr`. With `inlined == false`, only the function's frame. `window` is
    /// the symbolizer's window the lookup belongs to (see [`Self::drop_unused_since`]).
    pub(crate) fn frames(
        &mut self,
        file: &ObjectFile,
        addr: u64,
        inlined: bool,
        window: u32,
        count: &mut ParseCount,
    ) -> Vec<DwarfFrame> {
        let Some(unit) = self.unit_of(addr) else {
            return Vec::new();
        };
        if self.parsed(file, unit, window, count).is_none() {
            return Vec::new();
        }
        let Some(parsed) = self.units[unit].parsed.as_deref_mut() else {
            return Vec::new();
        };
        let mut reader = UnitReader {
            dwarf: load(file),
            headers: &self.headers,
            unit: None,
            read: 0,
        };
        let before = parsed.heap_bytes();
        let frames = parsed.frames(addr, inlined, &mut reader);
        self.parsed_bytes += parsed.heap_bytes() - before;
        self.unreleased += reader.read;
        self.release_if_due(file);
        frames
    }

    /// The line of the row at `addr` in the unit covering it (a function's start line);
    /// `window` as in [`Self::frames`].
    pub(crate) fn line_at(
        &mut self,
        file: &ObjectFile,
        addr: u64,
        window: u32,
        count: &mut ParseCount,
    ) -> Option<u32> {
        let unit = self.unit_of(addr)?;
        let line = self.parsed(file, unit, window, count)?.location(addr);
        self.release_if_due(file);
        line.map(|(_, line)| line)
    }

    /// Gives the file's pages back once lookups and parses have read
    /// [`RELEASE_EVERY_BYTES`] of entries since the last time: a lookup reads a few
    /// scattered entries, a parse a whole unit, and a window of cold addresses many of
    /// both; releasing after each would fault the same abbreviation, string and line
    /// pages in again and again.
    fn release_if_due(&mut self, file: &ObjectFile) {
        if self.unreleased >= RELEASE_EVERY_BYTES {
            self.unreleased = 0;
            file.release_pages();
        }
    }

    fn unit_of(&self, addr: u64) -> Option<usize> {
        let i = self
            .ranges
            .partition_point(|r| r.begin <= addr)
            .checked_sub(1)?;
        let r = &self.ranges[i];
        (addr < r.end()).then_some(r.unit as usize)
    }

    /// Unit `index` parsed (now, if it was not kept).
    fn parsed(
        &mut self,
        file: &ObjectFile,
        index: usize,
        window: u32,
        count: &mut ParseCount,
    ) -> Option<&ParsedUnit> {
        self.clock += 1;
        let clock = self.clock;
        let slot = self.units.get_mut(index)?;
        slot.last_used = clock;
        slot.last_window = window;
        if slot.parsed.is_none() {
            let dwarf = load(file);
            let release = || file.release_pages();
            match parse_unit(
                &dwarf,
                slot.offset,
                file.code_start,
                &release,
                &mut self.paths,
            ) {
                Ok(parsed) => {
                    // Its entries were read once (given back every few MiB within the
                    // parse), and each file path is a scattered string read: count them
                    // towards the next release with the lookups'.
                    self.unreleased += parsed.entry_bytes + parsed.files.len() * FAULT_AROUND_BYTES;
                    count.units_parsed += 1;
                    self.parsed_bytes += parsed.heap_bytes();
                    slot.parsed = Some(Box::new(parsed));
                }
                Err(_) => {
                    count.errors += 1;
                    return None;
                }
            }
        }
        slot.parsed.as_deref()
    }
}

impl ParsedUnit {
    /// Heap bytes held, the names' table included.
    fn heap_bytes(&self) -> usize {
        self.bytes + table_bytes::<(usize, DwarfName)>(self.names.capacity())
    }

    /// `(file, line)` of the row covering `addr`.
    fn location(&self, addr: u64) -> Option<(u32, u32)> {
        self.lines.location(addr)
    }

    fn file(&self, index: u32) -> Option<Arc<str>> {
        self.files.get(index as usize).cloned()
    }

    /// The frames at `addr` (see [`DwarfUnits::frames`]), reading the names of the
    /// inlined functions among them that no lookup has read yet.
    fn frames(
        &mut self,
        addr: u64,
        inlined: bool,
        reader: &mut UnitReader<'_, '_>,
    ) -> Vec<DwarfFrame> {
        let (mut file, mut line) = match self.location(addr) {
            Some((f, l)) => (Some(f), l),
            None => (None, 0),
        };
        let mut out = Vec::new();
        if inlined {
            let function = self
                .functions
                .partition_point(|f| f.begin <= addr)
                .checked_sub(1)
                .map(|i| self.functions[i])
                .filter(|f| addr < f.end);
            let calls = function.and_then(|f| {
                reader.unit = Some(self.unit(&reader.dwarf)?);
                reader.inlined_calls(self.offset, f.entry, addr)
            });
            let calls = calls.unwrap_or_default();
            // Call files first: reading a name may open another unit in `reader`.
            let call_files: Vec<Option<u32>> = calls
                .iter()
                .map(|call| call.call_file.and_then(|index| self.file_id(index)))
                .collect();
            for (call, call_file) in calls.iter().zip(call_files) {
                out.push(DwarfFrame {
                    inlined: Some(self.name(call.origin, reader)),
                    file: file.and_then(|f| self.file(f)),
                    line,
                });
                file = call_file;
                line = call.call_line;
            }
        }
        out.push(DwarfFrame {
            inlined: None,
            file: file.and_then(|f| self.file(f)),
            line,
        });
        out
    }

    /// The name read from the entry at `.debug_info` offset `origin`, read the first time
    /// it is asked for.
    fn name(&mut self, origin: usize, reader: &mut UnitReader<'_, '_>) -> DwarfName {
        if let Some(name) = self.names.get(&origin) {
            return name.clone();
        }
        let name = match origin {
            NO_ORIGIN => None,
            offset => reader.name_at(offset),
        }
        .unwrap_or_else(empty_name);
        self.bytes += string_bytes(&name.name) + name.linkage.as_deref().map_or(0, string_bytes);
        self.names.insert(origin, name.clone());
        name
    }

    /// The `files` index of line-table file `index` (every file was read at parse).
    fn file_id(&self, index: u64) -> Option<u32> {
        let id = *self.file_ids.ids.get(usize::try_from(index).ok()?)?;
        (id != END).then_some(id)
    }

    /// The unit again, from its kept bases: no abbreviations or line program parsed.
    fn unit<'a>(&self, dwarf: &Dwarf<'a>) -> Option<Unit<'a>> {
        let bases = self.bases.as_ref()?;
        let header = dwarf
            .debug_info
            .header_from_offset(gimli::DebugInfoOffset(self.offset))
            .ok()?;
        Some(gimli::Unit {
            header,
            abbreviations: bases.abbreviations.clone(),
            name: None,
            comp_dir: None,
            low_pc: bases.low_pc,
            str_offsets_base: bases.str_offsets_base,
            addr_base: bases.addr_base,
            loclists_base: bases.loclists_base,
            rnglists_base: bases.rnglists_base,
            line_program: None,
            dwo_id: None,
        })
    }
}

/// Reads entries of units on demand, keeping the last unit it opened (a lookup's
/// inlined calls and their names are usually all in one unit).
struct UnitReader<'h, 'a> {
    dwarf: Dwarf<'a>,
    /// Offsets of all unit headers, ascending.
    headers: &'h [usize],
    unit: Option<Unit<'a>>,
    /// `.debug_info` bytes of the entries read (for [`DwarfUnits::unreleased`]).
    read: usize,
}

/// The unit `header` heads, with only what its address ranges need: the abbreviation
/// of its root entry (not the unit's whole table) and the bases its root entry sets. No
/// string, line program header or other entry is read, which `gimli::Unit::new` would
/// all do. Range lists read through it are the same as through the whole unit. `None`
/// when the root's abbreviation cannot be found or read (the caller then builds the
/// whole unit, or skips it).
fn root_unit<'a>(
    dwarf: &Dwarf<'a>,
    debug_abbrev: &'a [u8],
    endian: RunTimeEndian,
    header: gimli::UnitHeader<Reader<'a>>,
) -> Option<Unit<'a>> {
    use gimli::Reader as _;
    let code = header
        .range_from(header.root_offset()..)
        .ok()?
        .read_uleb128()
        .ok()?;
    let bytes = abbreviation_bytes(debug_abbrev, header.debug_abbrev_offset().0, code)?;
    // The slice holds that one abbreviation and no terminator: parsing stops at its end.
    let abbreviations = gimli::DebugAbbrev::new(bytes, endian)
        .abbreviations(gimli::DebugAbbrevOffset(0))
        .ok()?;
    let encoding = header.encoding();
    let mut unit = gimli::Unit {
        header,
        abbreviations: Arc::new(abbreviations),
        name: None,
        comp_dir: None,
        low_pc: 0,
        str_offsets_base: gimli::DebugStrOffsetsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        addr_base: gimli::DebugAddrBase(0),
        loclists_base: gimli::DebugLocListsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        rnglists_base: gimli::DebugRngListsBase::default_for_encoding_and_file(
            encoding,
            dwarf.file_type,
        ),
        line_program: None,
        dwo_id: None,
    };
    let mut low_pc = None;
    {
        let mut entries = unit.header.entries_raw(&unit.abbreviations, None).ok()?;
        let abbreviation = entries.read_abbreviation().ok()??;
        for spec in abbreviation.attributes() {
            let attr = entries.read_attribute(*spec).ok()?;
            match (attr.name(), attr.value()) {
                (gimli::DW_AT_low_pc, value) => low_pc = Some(value),
                (gimli::DW_AT_str_offsets_base, AttributeValue::DebugStrOffsetsBase(base)) => {
                    unit.str_offsets_base = base;
                }
                (
                    gimli::DW_AT_addr_base | gimli::DW_AT_GNU_addr_base,
                    AttributeValue::DebugAddrBase(base),
                ) => unit.addr_base = base,
                (gimli::DW_AT_loclists_base, AttributeValue::DebugLocListsBase(base)) => {
                    unit.loclists_base = base;
                }
                (
                    gimli::DW_AT_rnglists_base | gimli::DW_AT_GNU_ranges_base,
                    AttributeValue::DebugRngListsBase(base),
                ) => unit.rnglists_base = base,
                _ => {}
            }
        }
    }
    // As `gimli::Unit::new`: the base address of the unit's range lists.
    if let Some(value) = low_pc {
        if let Some(addr) = dwarf.attr_address(&unit, value).ok()? {
            unit.low_pc = addr;
        }
    }
    Some(unit)
}

/// The bytes of abbreviation `code` in the table at `offset` of `.debug_abbrev`, found
/// by skipping the abbreviations before it unbuilt. `None` when the table ends (or the
/// bytes run out or are malformed) before `code`.
fn abbreviation_bytes(debug_abbrev: &[u8], offset: usize, code: u64) -> Option<&[u8]> {
    use gimli::Reader as _;
    let table = debug_abbrev.get(offset..)?;
    // Only LEB128 numbers and single bytes are read: the byte order does not matter.
    let mut input = EndianSlice::new(table, RunTimeEndian::Little);
    loop {
        let start = table.len() - input.len();
        let this = input.read_uleb128().ok()?;
        if this == 0 {
            return None;
        }
        input.read_uleb128().ok()?; // tag
        input.read_u8().ok()?; // has children
        loop {
            let name = input.read_uleb128().ok()?;
            let form = input.read_uleb128().ok()?;
            if name == 0 && form == 0 {
                break;
            }
            if form == u64::from(gimli::DW_FORM_implicit_const.0) {
                input.read_sleb128().ok()?;
            }
        }
        if this == code {
            return table.get(start..table.len() - input.len());
        }
    }
}

/// The code ranges of an inlined call, as `gimli::Dwarf::die_ranges` gives them.
enum CallRanges<'a> {
    List(gimli::RngListIter<Reader<'a>>),
    /// `[low_pc, high_pc)`, when both are given.
    Single(Option<(u64, u64)>),
}

/// What a lookup reads of one inlined call's entry.
struct CallEntry<'a> {
    ranges: CallRanges<'a>,
    call: InlinedCall,
}

/// Reads the attributes of the inlined call whose `abbreviation` was just read from
/// `entries`: its code ranges (by the rules of `gimli::Dwarf::die_ranges`, with the same
/// errors: `None`), its origin and its call site. Other attributes are stepped over.
fn read_inlined_call<'a>(
    dwarf: &Dwarf<'a>,
    unit: &Unit<'a>,
    entries: &mut gimli::EntriesRaw<'_, Reader<'a>>,
    abbreviation: &gimli::Abbreviation,
) -> Option<CallEntry<'a>> {
    let mut list = None;
    let mut low = None;
    let mut high = None;
    let mut size = None;
    let mut origin = None;
    let mut call_file = None;
    let mut call_line = None;
    for spec in abbreviation.attributes() {
        match spec.name() {
            gimli::DW_AT_low_pc
            | gimli::DW_AT_high_pc
            | gimli::DW_AT_ranges
            | gimli::DW_AT_abstract_origin
            | gimli::DW_AT_call_file
            | gimli::DW_AT_call_line => {}
            _ => {
                entries.skip_attributes(std::slice::from_ref(spec)).ok()?;
                continue;
            }
        }
        let attr = entries.read_attribute(*spec).ok()?;
        // `die_ranges` stops at the first range list; the first of each other attribute
        // counts, as `attr_value` finds it.
        match (attr.name(), attr.value()) {
            _ if list.is_some()
                && matches!(
                    attr.name(),
                    gimli::DW_AT_low_pc | gimli::DW_AT_high_pc | gimli::DW_AT_ranges
                ) => {}
            (gimli::DW_AT_low_pc, value) => low = Some(dwarf.attr_address(unit, value).ok()??),
            (gimli::DW_AT_high_pc, AttributeValue::Udata(n)) => size = Some(n),
            (gimli::DW_AT_high_pc, value) => high = Some(dwarf.attr_address(unit, value).ok()??),
            (gimli::DW_AT_ranges, value) => list = dwarf.attr_ranges(unit, value).ok()?,
            (gimli::DW_AT_abstract_origin, value) if origin.is_none() => origin = Some(value),
            (gimli::DW_AT_call_file, value) if call_file.is_none() => call_file = Some(value),
            (gimli::DW_AT_call_line, value) if call_line.is_none() => call_line = Some(value),
            _ => {}
        }
    }
    let ranges = match list {
        Some(list) => CallRanges::List(list),
        None => CallRanges::Single(low.and_then(|begin| {
            let end = size.map(|n| begin.wrapping_add(n)).or(high)?;
            Some((begin, end))
        })),
    };
    let origin = match origin {
        Some(AttributeValue::UnitRef(offset)) => offset
            .to_debug_info_offset(&unit.header)
            .map_or(NO_ORIGIN, |o| o.0),
        Some(AttributeValue::DebugInfoRef(offset)) => offset.0,
        _ => NO_ORIGIN,
    };
    let call_file = match call_file {
        Some(AttributeValue::FileIndex(index) | AttributeValue::Udata(index)) => Some(index),
        _ => None,
    };
    let call_line = match call_line {
        Some(AttributeValue::Udata(line)) => u32::try_from(line).unwrap_or(u32::MAX),
        _ => 0,
    };
    Some(CallEntry {
        ranges,
        call: InlinedCall {
            origin,
            call_file,
            call_line,
        },
    })
}

/// A `gimli::Dwarf` over the file's sections, in place (nothing is parsed yet).
fn load(file: &ObjectFile) -> Dwarf<'_> {
    let endian = file.endian();
    let loaded: Result<Dwarf<'_>, std::convert::Infallible> =
        gimli::Dwarf::load(|id| Ok(EndianSlice::new(file.section(id), endian)));
    match loaded {
        Ok(dwarf) => dwarf,
        Err(never) => match never {},
    }
}

/// Parses the unit at `offset`: line rows, file names, inlined calls. Line sequences and
/// functions that start below `code_start` (the file's first code address) are left out:
/// the linker dropped them.
fn parse_unit(
    dwarf: &Dwarf<'_>,
    offset: usize,
    code_start: u64,
    release: &dyn Fn(),
    paths: &mut StringSet,
) -> gimli::Result<ParsedUnit> {
    let header = dwarf
        .debug_info
        .header_from_offset(gimli::DebugInfoOffset(offset))?;
    let unit = dwarf.unit(header)?;
    let mut out = ParsedUnit {
        offset,
        entry_bytes: unit.header.length_including_self(),
        ..ParsedUnit::default()
    };
    let comp_dir = comp_dir(&unit);
    if let Some(program) = unit.line_program.clone() {
        // Every file of the table, so that inlined calls' files need no line program
        // header at lookup (DWARF 5 counts files from 0, earlier versions from 1).
        let table = program.header();
        let first = u64::from(table.version() < 5);
        for index in first..first + table.file_names().len() as u64 {
            out.file_ids.id(index, &mut out.files, || {
                paths.intern(&file_path(dwarf, &unit, table, index, &comp_dir))
            });
        }
        let mut program_rows = program.rows();
        // Out of malloc (see `MapVec`): a large unit has half a MiB of rows.
        let mut rows: MapVec<Row> = MapVec::new();
        // Where each sequence starts in `rows` (its rows are in address order already).
        let mut sequences: Vec<usize> = vec![0];
        // Whether the sequence being read starts below the file's code: the linker
        // dropped its function and left a placeholder address (0, what lld and GNU ld
        // write), so no sampled address can be in it, and its rows would only shadow
        // real code near the start of the file. In Rust binaries most sequences are
        // such (generic code instantiated in every unit and kept in one).
        let mut dropped = None;
        while let Some((header, row)) = program_rows.next_row()? {
            let skip = *dropped.get_or_insert(row.address() < code_start);
            if row.end_sequence() {
                dropped = None;
                if skip {
                    continue;
                }
                rows.push(Row {
                    addr: row.address(),
                    file: END,
                    line: 0,
                });
                sequences.push(rows.len());
                continue;
            }
            if skip {
                continue;
            }
            let file = out.file_ids.id(row.file_index(), &mut out.files, || {
                paths.intern(&file_path(
                    dwarf,
                    &unit,
                    header,
                    row.file_index(),
                    &comp_dir,
                ))
            });
            let line = row
                .line()
                .map_or(0, |l| u32::try_from(l.get()).unwrap_or(u32::MAX));
            // Rows differing only in column or flags name the same place: one is enough
            // (about a third of a Rust unit's rows).
            if rows.last().is_some_and(|last| {
                last.file == file && last.line == line && last.addr <= row.address()
            }) {
                continue;
            }
            rows.push(Row {
                addr: row.address(),
                file,
                line,
            });
        }
        out.lines = LineTable::from_sorted(&sort_rows(&rows, &sequences));
        read_functions(dwarf, &unit, code_start, release, &mut out.functions)?;
    }
    out.functions.shrink_to_fit();
    out.files.shrink_to_fit();
    out.bytes = allocation_bytes(std::mem::size_of::<ParsedUnit>())
        + out.lines.heap_bytes()
        + vec_bytes(&out.functions)
        + vec_bytes(&out.file_ids.ids)
        + vec_bytes(&out.files)
        + abbreviations_bytes(&unit.abbreviations);
    out.bases = Some(UnitBases {
        abbreviations: unit.abbreviations.clone(),
        low_pc: unit.low_pc,
        str_offsets_base: unit.str_offsets_base,
        addr_base: unit.addr_base,
        loclists_base: unit.loclists_base,
        rnglists_base: unit.rnglists_base,
    });
    Ok(out)
}

/// Sort key of a row: by address, a sequence's end first where another sequence starts
/// at the address it ends at.
fn row_key(row: &Row) -> (u64, bool) {
    (row.addr, row.file != END)
}

/// `rows` sorted by [`row_key`], stably (in a `MapVec`, as they are).
///
/// `sequences` are where each sequence of `rows` starts (the first at 0). A line program
/// lists its sequences (one per function, in Rust) in no particular order, but the rows
/// of each in address order: the sequences are ordered as blocks. Blocks whose keys
/// overlap (the sequences of functions the linker dropped all start at address 0) are
/// sorted together row by row, in their original order; keys never repeat across such
/// groups, so the result is the stable sort of all rows.
fn sort_rows(rows: &[Row], sequences: &[usize]) -> MapVec<Row> {
    struct Block {
        start: usize,
        end: usize,
        min: (u64, bool),
        max: (u64, bool),
        sorted: bool,
    }
    let mut blocks: Vec<Block> = Vec::with_capacity(sequences.len());
    for (i, &start) in sequences.iter().enumerate() {
        let end = sequences.get(i + 1).copied().unwrap_or(rows.len());
        let Some(block) = rows.get(start..end).filter(|b| !b.is_empty()) else {
            continue;
        };
        let sorted = block.is_sorted_by_key(row_key);
        let (min, max) = if sorted {
            (row_key(&block[0]), row_key(&block[block.len() - 1]))
        } else {
            let keys = block.iter().map(row_key);
            (
                keys.clone().min().unwrap_or_default(),
                keys.max().unwrap_or_default(),
            )
        };
        blocks.push(Block {
            start,
            end,
            min,
            max,
            sorted,
        });
    }
    blocks.sort_by_key(|b| b.min);
    let mut out = MapVec::new();
    let mut i = 0;
    while i < blocks.len() {
        // The group of blocks from `i` whose keys overlap.
        let mut j = i + 1;
        let mut max = blocks[i].max;
        while j < blocks.len() && blocks[j].min <= max {
            max = max.max(blocks[j].max);
            j += 1;
        }
        let group = &mut blocks[i..j];
        if let [block] = group {
            if block.sorted {
                out.extend_from_slice(&rows[block.start..block.end]);
                i = j;
                continue;
            }
        }
        group.sort_by_key(|b| b.start);
        let from = out.len();
        for block in group.iter() {
            out.extend_from_slice(&rows[block.start..block.end]);
        }
        out[from..].sort_by_key(row_key);
        i = j;
    }
    out
}

/// Line-table file index to index into `ParsedUnit::files`, filled for every file of the
/// table when the unit is parsed.
#[derive(Debug, Default)]
struct FileIds {
    /// By line-table index (small and dense: a unit names at most a few thousand files).
    ids: Vec<u32>,
}

/// The largest line-table file index kept in [`FileIds::ids`]; larger (corrupt) ones get
/// no file.
const MAX_FILE_INDEX: u64 = 1 << 20;

impl FileIds {
    /// The `files` index of line-table file `index`, its path made by `path` and pushed
    /// the first time.
    fn id(
        &mut self,
        index: u64,
        files: &mut Vec<Arc<str>>,
        path: impl FnOnce() -> Arc<str>,
    ) -> u32 {
        if index > MAX_FILE_INDEX {
            return END;
        }
        let slot = index as usize;
        if slot >= self.ids.len() {
            self.ids.resize(slot + 1, END);
        }
        if self.ids[slot] == END {
            self.ids[slot] = files.len() as u32;
            files.push(path());
        }
        self.ids[slot]
    }
}

/// The path of line-table file `index`: absolute when the file name or its directory is,
/// else below the unit's compilation directory.
fn file_path(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    header: &gimli::LineProgramHeader<Reader<'_>>,
    index: u64,
    comp_dir: &str,
) -> String {
    let Some(entry) = header.file(index) else {
        return String::new();
    };
    let attr = |v: AttributeValue<Reader<'_>>| -> String {
        dwarf
            .attr_string(unit, v)
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let name = attr(entry.path_name());
    if name.starts_with('/') {
        return name;
    }
    let dir = entry.directory(header).map(attr).unwrap_or_default();
    let mut path = if dir.starts_with('/') || comp_dir.is_empty() {
        dir
    } else if dir.is_empty() {
        comp_dir.to_owned()
    } else {
        format!("{comp_dir}/{dir}")
    };
    if !path.is_empty() && !path.ends_with('/') {
        path.push('/');
    }
    path.push_str(&name);
    path
}

/// The unit's compilation directory (empty when it names none).
fn comp_dir(unit: &Unit<'_>) -> String {
    unit.comp_dir
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Reads the code ranges of the unit's functions (`DW_TAG_subprogram` entries with code)
/// into `out`, sorted by address. Every other entry's attributes are skipped unread.
fn read_functions(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    code_start: u64,
    release: &dyn Fn(),
    out: &mut Vec<Function>,
) -> gimli::Result<()> {
    let mut released_at = 0usize;
    let mut entries = unit.entries_raw(None)?;
    while !entries.is_empty() {
        let entry = entries.next_offset().0;
        if entry - released_at >= RELEASE_EVERY_BYTES {
            released_at = entry;
            release();
        }
        let Some(abbreviation) = entries.read_abbreviation()? else {
            continue;
        };
        if abbreviation.tag() != gimli::DW_TAG_subprogram {
            entries.skip_attributes(abbreviation.attributes())?;
            continue;
        }
        let mut low = None;
        let mut high = None;
        let mut size = None;
        let mut list = None;
        for spec in abbreviation.attributes() {
            let attr = entries.read_attribute(*spec)?;
            match (attr.name(), attr.value()) {
                (gimli::DW_AT_low_pc, value) => low = dwarf.attr_address(unit, value)?,
                (gimli::DW_AT_high_pc, AttributeValue::Udata(n)) => size = Some(n),
                (gimli::DW_AT_high_pc, value) => high = dwarf.attr_address(unit, value)?,
                (gimli::DW_AT_ranges, value) => list = dwarf.attr_ranges(unit, value)?,
                _ => {}
            }
        }
        // A range below the file's code is a dropped function's (see `parse_unit`).
        let mut push = |begin: u64, end: u64| {
            if begin < end && begin >= code_start {
                out.push(Function { begin, end, entry });
            }
        };
        if let Some(mut list) = list {
            while let Some(r) = list.next()? {
                push(r.begin, r.end);
            }
        } else if let Some(begin) = low {
            if let Some(end) = size.map(|n| begin.wrapping_add(n)).or(high) {
                push(begin, end);
            }
        }
    }
    out.sort_by_key(|f| f.begin);
    Ok(())
}

fn empty_name() -> DwarfName {
    DwarfName {
        name: Arc::from(""),
        linkage: None,
    }
}

impl<'a> UnitReader<'_, 'a> {
    /// The inlined calls holding `addr` in the function whose entry is at unit offset
    /// `entry` of the unit at `.debug_info` offset `unit`, innermost first. `None` when
    /// the entries cannot be read.
    fn inlined_calls(&mut self, unit: usize, entry: usize, addr: u64) -> Option<Vec<InlinedCall>> {
        self.open_unit_containing(gimli::DebugInfoOffset(unit))?;
        let unit = self.unit.as_ref()?;
        // Raw entries: the attributes of an entry that is skipped are stepped over, not
        // parsed; those of an inlined call are read one by one.
        let mut entries = unit
            .header
            .entries_raw(&unit.abbreviations, Some(gimli::UnitOffset(entry)))
            .ok()?;
        // The function's own entry.
        let function = entries.read_abbreviation().ok()??;
        entries.skip_attributes(function.attributes()).ok()?;
        // (entry depth, call), outermost first.
        let mut chain: Vec<(isize, InlinedCall)> = Vec::new();
        // Entries deeper than this are skipped: they cannot hold `addr` (an inlined call
        // not holding it) or are not this function's code (a nested function).
        let mut skip_below: Option<isize> = None;
        while !entries.is_empty() {
            let depth = entries.next_depth();
            if depth <= 0 {
                break;
            }
            // `None`: the end of a list of children.
            let Some(abbreviation) = entries.read_abbreviation().ok()? else {
                continue;
            };
            if skip_below.is_some_and(|d| depth > d) {
                entries.skip_attributes(abbreviation.attributes()).ok()?;
                continue;
            }
            skip_below = None;
            match abbreviation.tag() {
                gimli::DW_TAG_subprogram => {
                    skip_below = Some(depth);
                    entries.skip_attributes(abbreviation.attributes()).ok()?;
                }
                gimli::DW_TAG_inlined_subroutine => {
                    let read = read_inlined_call(&self.dwarf, unit, &mut entries, abbreviation)?;
                    let mut holds = false;
                    match read.ranges {
                        CallRanges::List(mut list) => {
                            while let Some(r) = list.next().ok()? {
                                holds |= r.begin <= addr && addr < r.end;
                            }
                        }
                        CallRanges::Single(Some((begin, end))) => {
                            holds = begin <= addr && addr < end;
                        }
                        CallRanges::Single(None) => {}
                    }
                    // Overlapping siblings (bad debug info): the first one found wins.
                    if !holds || chain.last().is_some_and(|(d, _)| *d >= depth) {
                        skip_below = Some(depth);
                        continue;
                    }
                    chain.push((depth, read.call));
                }
                _ => entries.skip_attributes(abbreviation.attributes()).ok()?,
            }
        }
        self.read += entries
            .next_offset()
            .0
            .saturating_sub(entry)
            .max(FAULT_AROUND_BYTES);
        Some(chain.into_iter().rev().map(|(_, call)| call).collect())
    }

    /// The name of the function whose DIE is at `.debug_info` offset `offset`, following
    /// its `abstract_origin` / `specification` links (at most a few), in its unit or
    /// another. `None` when the offset leads nowhere readable.
    fn name_at(&mut self, offset: usize) -> Option<DwarfName> {
        // The entry and its strings: two scattered reads.
        self.read += 2 * FAULT_AROUND_BYTES;
        let mut name: Option<String> = None;
        let mut linkage: Option<String> = None;
        let mut target = gimli::DebugInfoOffset(offset);
        for _ in 0..4 {
            self.open_unit_containing(target)?;
            let unit = self.unit.as_ref()?;
            let entry = unit.entry(target.to_unit_offset(&unit.header)?).ok()?;
            let string = |v: AttributeValue<Reader<'a>>| {
                self.dwarf
                    .attr_string(unit, v)
                    .ok()
                    .map(|s| s.to_string_lossy().into_owned())
            };
            if linkage.is_none() {
                linkage = entry
                    .attr_value(gimli::DW_AT_linkage_name)
                    .or_else(|| entry.attr_value(gimli::DW_AT_MIPS_linkage_name))
                    .and_then(string);
            }
            if name.is_none() {
                name = entry.attr_value(gimli::DW_AT_name).and_then(string);
            }
            if name.is_some() && linkage.is_some() {
                break;
            }
            target = match entry
                .attr_value(gimli::DW_AT_abstract_origin)
                .or_else(|| entry.attr_value(gimli::DW_AT_specification))
            {
                Some(AttributeValue::UnitRef(next)) => next.to_debug_info_offset(&unit.header)?,
                Some(AttributeValue::DebugInfoRef(next)) => next,
                _ => break,
            };
        }
        Some(DwarfName {
            name: Arc::from(name.unwrap_or_default()),
            linkage: linkage.map(Arc::from),
        })
    }

    /// The unit whose bytes contain `offset`, opened now unless it is the last one opened.
    fn open_unit_containing(&mut self, offset: gimli::DebugInfoOffset) -> Option<()> {
        let i = self
            .headers
            .partition_point(|&h| h <= offset.0)
            .checked_sub(1)?;
        let start = gimli::DebugInfoOffset(self.headers[i]);
        let kept = self
            .unit
            .as_ref()
            .is_some_and(|u| u.header.offset().0 == start.0);
        if !kept {
            let header = self.dwarf.debug_info.header_from_offset(start).ok()?;
            self.unit = Some(self.dwarf.unit(header).ok()?);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_from_root_entries_equals_the_index_from_whole_units() {
        let exe = std::env::current_exe().unwrap();
        let file = ObjectFile::open(&exe, usize::MAX).expect("the test binary opens");
        assert!(file.has_dwarf);
        let root = DwarfUnits::index_units(&file, true);
        let whole = DwarfUnits::index_units(&file, false);
        assert!(root.units.len() > 10, "{} units", root.units.len());
        assert_eq!(root.headers, whole.headers);
        let offsets = |d: &DwarfUnits| d.units.iter().map(|u| u.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&root), offsets(&whole));
        let ranges = |d: &DwarfUnits| {
            d.ranges
                .iter()
                .map(|r| (r.begin, r.len, r.unit))
                .collect::<Vec<_>>()
        };
        assert_eq!(ranges(&root), ranges(&whole));
    }

    /// Rows in sequences of random lengths, each in address order, the sequences in
    /// random order, sometimes touching or overlapping, sometimes empty or unordered.
    #[test]
    fn rows_sorted_as_sequences_are_the_rows_sorted_one_by_one() {
        let mut next = crate::symbolize::xorshift(0x2545_f491_4f6c_dd1d);
        for case in 0..2_000 {
            let mut rows = Vec::new();
            let mut sequences = vec![0];
            for _ in 0..next(12) {
                let mut addr = next(if case % 2 == 0 { 4_000 } else { 64 }) * 16;
                for _ in 0..next(6) {
                    rows.push(Row {
                        addr,
                        file: next(3) as u32,
                        line: next(100) as u32,
                    });
                    addr += if case % 7 == 0 {
                        next(3) * 8
                    } else {
                        1 + next(40)
                    };
                    if case % 11 == 0 {
                        addr = addr.saturating_sub(next(60));
                    }
                }
                rows.push(Row {
                    addr,
                    file: END,
                    line: 0,
                });
                sequences.push(rows.len());
            }
            let mut expected = rows.clone();
            expected.sort_by_key(row_key);
            let got = sort_rows(&rows, &sequences);
            let view = |r: &[Row]| {
                r.iter()
                    .map(|r| (r.addr, r.file, r.line))
                    .collect::<Vec<_>>()
            };
            assert_eq!(view(&got), view(&expected), "case {case}");
        }
    }

    /// The inlined calls read with a tree cursor, every attribute of every entry parsed
    /// (how lookups read them before raw entries).
    fn inlined_calls_by_cursor(
        dwarf: &Dwarf<'_>,
        unit: &Unit<'_>,
        entry: usize,
        addr: u64,
    ) -> Option<Vec<InlinedCall>> {
        let mut entries = unit.entries_at_offset(gimli::UnitOffset(entry)).ok()?;
        entries.next_dfs().ok()??;
        let mut chain: Vec<(isize, InlinedCall)> = Vec::new();
        let mut skip_below: Option<isize> = None;
        while let Some(entry) = entries.next_dfs().ok()? {
            let depth = entry.depth();
            if depth <= 0 {
                break;
            }
            if skip_below.is_some_and(|d| depth > d) {
                continue;
            }
            skip_below = None;
            match entry.tag() {
                gimli::DW_TAG_subprogram => skip_below = Some(depth),
                gimli::DW_TAG_inlined_subroutine => {
                    let mut holds = false;
                    let mut ranges = dwarf.die_ranges(unit, entry).ok()?;
                    while let Some(r) = ranges.next().ok()? {
                        holds |= r.begin <= addr && addr < r.end;
                    }
                    if !holds || chain.last().is_some_and(|(d, _)| *d >= depth) {
                        skip_below = Some(depth);
                        continue;
                    }
                    let origin = match entry.attr_value(gimli::DW_AT_abstract_origin) {
                        Some(AttributeValue::UnitRef(offset)) => offset
                            .to_debug_info_offset(&unit.header)
                            .map_or(NO_ORIGIN, |o| o.0),
                        Some(AttributeValue::DebugInfoRef(offset)) => offset.0,
                        _ => NO_ORIGIN,
                    };
                    let call_file = match entry.attr_value(gimli::DW_AT_call_file) {
                        Some(AttributeValue::FileIndex(index) | AttributeValue::Udata(index)) => {
                            Some(index)
                        }
                        _ => None,
                    };
                    let call_line = match entry.attr_value(gimli::DW_AT_call_line) {
                        Some(AttributeValue::Udata(line)) => {
                            u32::try_from(line).unwrap_or(u32::MAX)
                        }
                        _ => 0,
                    };
                    chain.push((
                        depth,
                        InlinedCall {
                            origin,
                            call_file,
                            call_line,
                        },
                    ));
                }
                _ => {}
            }
        }
        Some(chain.into_iter().rev().map(|(_, call)| call).collect())
    }

    #[test]
    fn inlined_calls_from_raw_entries_equal_those_from_parsed_entries() {
        let exe = std::env::current_exe().unwrap();
        let file = ObjectFile::open(&exe, usize::MAX).expect("the test binary opens");
        let units = DwarfUnits::index(&file);
        let dwarf = load(&file);
        let (mut compared, mut with_calls) = (0, 0);
        for slot in units.units.iter().step_by(3).take(300) {
            let parsed = parse_unit(
                &dwarf,
                slot.offset,
                file.code_start,
                &|| {},
                &mut StringSet::default(),
            );
            let Ok(parsed) = parsed else {
                continue;
            };
            let Some(unit) = parsed.unit(&dwarf) else {
                continue;
            };
            let mut reader = UnitReader {
                dwarf: load(&file),
                headers: &units.headers,
                unit: None,
                read: 0,
            };
            for f in parsed.functions.iter().step_by(7).take(40) {
                for addr in [f.begin, f.begin + (f.end - f.begin) / 2, f.end - 1] {
                    let raw = reader.inlined_calls(slot.offset, f.entry, addr);
                    let cursor = inlined_calls_by_cursor(&dwarf, &unit, f.entry, addr);
                    assert_eq!(
                        raw, cursor,
                        "unit {:#x} entry {:#x} address {addr:#x}",
                        slot.offset, f.entry
                    );
                    compared += 1;
                    with_calls += usize::from(raw.is_some_and(|c| !c.is_empty()));
                }
            }
        }
        assert!(
            compared > 1_000 && with_calls > 100,
            "{compared} lookups, {with_calls} with calls"
        );
    }

    #[test]
    fn units_share_one_copy_of_each_path_and_the_paths_go_with_the_last_unit() {
        let exe = std::env::current_exe().unwrap();
        let file = ObjectFile::open(&exe, usize::MAX).expect("the test binary opens");
        let mut units = DwarfUnits::index(&file);
        let starts: Vec<u64> = units
            .ranges
            .iter()
            .step_by(7)
            .take(60)
            .map(|r| r.begin)
            .collect();
        let mut count = ParseCount::default();
        for &addr in &starts {
            units.frames(&file, addr, true, 0, &mut count);
        }
        assert!(count.units_parsed > 10, "{count:?}");
        let named: usize = units
            .units
            .iter()
            .filter_map(|u| u.parsed.as_ref())
            .map(|p| p.files.len())
            .sum();
        let distinct = units.paths.len();
        assert!(distinct * 2 < named, "{distinct} distinct of {named} paths");
        // Every path is counted once, with the table.
        let bytes: usize = units.paths.iter().map(|p| string_bytes(p)).sum();
        assert!(units.paths.heap_bytes() > bytes);
        // Half the units gone: their paths no other unit names go too.
        let half = units.kept_bytes() / 2;
        assert!(units.evict_to(half) > 0);
        assert!(units.kept_bytes() <= half);
        assert!(units.paths.iter().all(|p| Arc::strong_count(p) > 1));
        // None left: nothing is kept, the paths' table included.
        units.evict_to(0);
        assert_eq!(units.parsed_units(), 0);
        assert_eq!(units.kept_bytes(), 0);
        assert_eq!(units.heap_bytes(), units.index_bytes());
    }

    #[test]
    fn leaving_out_dropped_functions_changes_no_lookup() {
        let exe = std::env::current_exe().unwrap();
        let file = ObjectFile::open(&exe, usize::MAX).expect("the test binary opens");
        assert!(file.code_start > 0, "no code start found");
        let units = DwarfUnits::index(&file);
        let dwarf = load(&file);
        let (mut compared, mut rows_all, mut rows_kept, mut packed) = (0, 0, 0, 0);
        for slot in units.units.iter().step_by(3).take(300) {
            let parse = |code_start| {
                parse_unit(
                    &dwarf,
                    slot.offset,
                    code_start,
                    &|| {},
                    &mut StringSet::default(),
                )
            };
            let (Ok(mut all), Ok(mut kept)) = (parse(0), parse(file.code_start)) else {
                continue;
            };
            rows_all += all.lines.len();
            rows_kept += kept.lines.len();
            packed += kept.lines.heap_bytes();
            assert!(kept.functions.iter().all(|f| f.begin >= file.code_start));
            let functions = kept.functions.iter().step_by(5).take(40);
            let addrs: Vec<u64> = functions
                .flat_map(|f| [f.begin, f.begin + (f.end - f.begin) / 2, f.end - 1])
                .chain(kept.lines.rows().step_by(11).take(40).map(|r| r.addr))
                .collect();
            for addr in addrs {
                let frames = |parsed: &mut ParsedUnit| {
                    let mut reader = UnitReader {
                        dwarf: load(&file),
                        headers: &units.headers,
                        unit: None,
                        read: 0,
                    };
                    format!("{:?}", parsed.frames(addr, true, &mut reader))
                };
                assert_eq!(
                    frames(&mut all),
                    frames(&mut kept),
                    "unit {:#x} address {addr:#x}",
                    slot.offset
                );
                compared += 1;
            }
        }
        println!("{compared} lookups; rows {rows_all} -> {rows_kept} in {packed} bytes");
        // Packed, a row takes at most a third of the 16 bytes it takes plain.
        assert!(
            packed * 3 < rows_kept * 16,
            "{rows_kept} rows in {packed} bytes"
        );
        assert!(compared > 1_000, "{compared} lookups");
        assert!(
            rows_kept < rows_all,
            "no dropped sequence among {rows_all} rows"
        );
    }

    /// `.debug_abbrev` with code 1 (a type entry, an implicit constant) before code 2
    /// (the compile unit: `low_pc` as an address, `high_pc` as a length).
    const ABBREV: &[u8] = &[
        1, 0x24, 0, 0x0b, 0x21, 0x7f, 0, 0, // code 1: DW_TAG_base_type, byte_size implicit -1
        2, 0x11, 1, 0x11, 0x01, 0x12, 0x06, 0, 0, // code 2: compile_unit, low_pc, high_pc
        0,
    ];

    /// A DWARF 4 unit whose root entry has abbreviation `code`: low_pc 0x1000, 0x20 long.
    fn debug_info(code: u8) -> Vec<u8> {
        let mut body = vec![4, 0, 0, 0, 0, 0, 8]; // version 4, abbrev offset 0, 8-byte addresses
        body.push(code);
        body.extend_from_slice(&0x1000u64.to_le_bytes());
        body.extend_from_slice(&0x20u32.to_le_bytes());
        body.push(0); // end of the root's children
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&body);
        out
    }

    fn ranges_of(info: &[u8], abbrev: &[u8]) -> Option<Vec<(u64, u64)>> {
        let endian = RunTimeEndian::Little;
        let loaded: Result<Dwarf<'_>, std::convert::Infallible> = gimli::Dwarf::load(|id| {
            Ok(EndianSlice::new(
                match id {
                    gimli::SectionId::DebugInfo => info,
                    gimli::SectionId::DebugAbbrev => abbrev,
                    _ => &[],
                },
                endian,
            ))
        });
        let dwarf = loaded.unwrap();
        let header = dwarf.units().next().ok()??;
        let unit = root_unit(&dwarf, abbrev, endian, header)?;
        let mut out = Vec::new();
        let mut iter = dwarf.unit_ranges(&unit).ok()?;
        while let Ok(Some(r)) = iter.next() {
            out.push((r.begin, r.end));
        }
        Some(out)
    }

    #[test]
    fn a_root_entry_is_read_with_its_abbreviation_alone() {
        assert_eq!(
            ranges_of(&debug_info(2), ABBREV),
            Some(vec![(0x1000, 0x1020)])
        );
        let second = abbreviation_bytes(ABBREV, 0, 2).unwrap();
        assert_eq!(second, &ABBREV[8..17]);
    }

    #[test]
    fn a_root_abbreviation_missing_or_malformed_gives_none_and_no_panic() {
        // The code is not in the table.
        assert_eq!(ranges_of(&debug_info(3), ABBREV), None);
        // The table is cut inside the abbreviation, or its offset is past the section.
        for cut in 0..ABBREV.len() - 1 {
            assert_eq!(
                abbreviation_bytes(&ABBREV[..cut], 0, 2),
                None,
                "cut at {cut}"
            );
            let _ = ranges_of(&debug_info(2), &ABBREV[..cut]);
        }
        assert_eq!(abbreviation_bytes(ABBREV, ABBREV.len() + 1, 1), None);
        // A LEB128 number that never ends.
        assert_eq!(abbreviation_bytes(&[0x80; 32], 0, 1), None);
        // Malformed attribute specification (name 0): gimli refuses the abbreviation.
        let bad: &[u8] = &[2, 0x11, 0, 0x00, 0x01, 0, 0, 0];
        assert_eq!(ranges_of(&debug_info(2), bad), None);
    }
}
