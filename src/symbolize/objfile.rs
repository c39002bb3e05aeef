//! One module's object file, mapped: its build id, a compact index of its function
//! symbols, and where its DWARF sections are.
//!
//! Nothing is copied from the file except what must be: the symbol index holds 24 bytes
//! per function (address, size, where the name is in the map), names are read from the
//! map and demangled only for addresses that are looked up; DWARF sections are used in
//! place, except compressed ones, which are decompressed once and counted as heap.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::symbolize::mapped::Mapped;
use crate::symbolize::{allocation_bytes, vec_bytes};

/// The DWARF sections the symbolizer reads.
pub(crate) const DWARF_SECTIONS: [gimli::SectionId; 11] = [
    gimli::SectionId::DebugAbbrev,
    gimli::SectionId::DebugAddr,
    gimli::SectionId::DebugInfo,
    gimli::SectionId::DebugLine,
    gimli::SectionId::DebugLineStr,
    gimli::SectionId::DebugRanges,
    gimli::SectionId::DebugRngLists,
    gimli::SectionId::DebugStr,
    gimli::SectionId::DebugStrOffsets,
    gimli::SectionId::DebugAranges,
    gimli::SectionId::DebugTypes,
];

/// A function from the symbol table.
#[derive(Debug, Clone, Copy)]
struct SymbolEntry {
    /// Address in the file's address space.
    addr: u64,
    /// Size in bytes; 0 when the table does not say.
    size: u32,
    /// The name's offset in the mapped file.
    name_offset: u32,
    name_len: u32,
}

/// Where one DWARF section's bytes are.
#[derive(Debug)]
enum SectionData {
    Absent,
    /// A range of the mapped file.
    InMap(std::ops::Range<usize>),
    /// Decompressed (the file had it compressed).
    Owned(Box<[u8]>),
}

/// A mapped file with its symbol index and DWARF section table.
#[derive(Debug)]
pub(crate) struct ObjectFile {
    map: Arc<Mapped>,
    /// The file with the DWARF (this one, or a separate debug file).
    dwarf_map: Arc<Mapped>,
    /// Whether the symbol names are in `dwarf_map` rather than `map`.
    symbols_in_debug_file: bool,
    /// Sorted by address, one entry per address.
    symbols: Vec<SymbolEntry>,
    sections: Vec<SectionData>,
    little_endian: bool,
    pub(crate) build_id: Option<Box<[u8]>>,
    pub(crate) has_dwarf: bool,
    /// The DWARF was left unread because decompressing it would take more heap than
    /// [`ObjectFile::open`] allowed.
    pub(crate) dwarf_too_large: bool,
    /// The lowest address of the file's code (its executable sections); 0 when unknown.
    /// Debug info below it describes functions the linker dropped (see
    /// [`DwarfUnits`](crate::symbolize::dwarf::DwarfUnits)).
    pub(crate) code_start: u64,
}

/// A function symbol found for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FoundSymbol<'a> {
    /// Entry address in the file's address space.
    pub(crate) addr: u64,
    /// The raw (mangled) name.
    pub(crate) name: &'a str,
}

impl ObjectFile {
    /// Maps and indexes `path`, and its separate debug file
    /// (`/usr/lib/debug/.build-id/xx/yyyy.debug`) when it has no DWARF of its own. `None`
    /// when the file cannot be mapped or is not an object file. Compressed DWARF sections
    /// (common in distributions' debug files) are decompressed onto the heap, but only if
    /// they take at most `max_decompressed` bytes together: beyond that the file is used
    /// without DWARF (`dwarf_too_large`), rather than decompressed and dropped again.
    pub(crate) fn open(path: &Path, max_decompressed: usize) -> Option<Self> {
        let map = Arc::new(Mapped::open(path)?);
        let file = object::File::parse(map.bytes()).ok()?;
        let build_id = file
            .build_id()
            .ok()
            .flatten()
            .map(|b| b.to_vec().into_boxed_slice());
        let little_endian = file.is_little_endian();
        let code_start = file
            .sections()
            .filter(|s| s.kind() == object::SectionKind::Text && s.size() > 0)
            .map(|s| s.address())
            .min()
            .unwrap_or(0);
        let mut symbols = read_symbols(&file, map.bytes());
        let mut symbols_in_debug_file = false;
        let mut dwarf_map = map.clone();
        let mut dwarf_too_large = false;
        let mut sections =
            read_sections(&file, map.bytes(), max_decompressed, &mut dwarf_too_large);
        let mut has_dwarf = file.section_by_name(".debug_line").is_some() && !dwarf_too_large;
        if !has_dwarf && !dwarf_too_large {
            let debug = build_id
                .as_deref()
                .and_then(separate_debug_file)
                .and_then(|p| Mapped::open(&p));
            if let Some(debug) = debug {
                let debug = Arc::new(debug);
                if let Ok(debug_file) = object::File::parse(debug.bytes()) {
                    if debug_file.section_by_name(".debug_line").is_some() {
                        sections = read_sections(
                            &debug_file,
                            debug.bytes(),
                            max_decompressed,
                            &mut dwarf_too_large,
                        );
                        has_dwarf = !dwarf_too_large;
                        let more = read_symbols(&debug_file, debug.bytes());
                        if more.len() > symbols.len() {
                            symbols = more;
                            symbols_in_debug_file = true;
                        }
                        dwarf_map = debug.clone();
                    }
                }
            }
        }
        drop(file);
        Some(Self {
            map,
            dwarf_map,
            symbols_in_debug_file,
            symbols,
            sections,
            little_endian,
            build_id,
            has_dwarf,
            dwarf_too_large,
            code_start,
        })
    }

    /// Entry addresses (file addresses) of the indexed functions, ascending.
    #[cfg(any(test, feature = "__internal"))]
    pub(crate) fn function_addresses(&self) -> impl Iterator<Item = u64> + '_ {
        self.symbols.iter().map(|s| s.addr)
    }

    /// Whether the symbol table names any function.
    pub(crate) fn has_symbols(&self) -> bool {
        !self.symbols.is_empty()
    }

    /// The function symbol containing `addr` (file address): the last one starting at or
    /// before it, if its size (when known) covers it.
    pub(crate) fn symbol(&self, addr: u64) -> Option<FoundSymbol<'_>> {
        let i = self
            .symbols
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let s = &self.symbols[i];
        if s.size != 0 && addr >= s.addr + u64::from(s.size) {
            return None;
        }
        let bytes = if self.symbols_in_debug_file {
            self.dwarf_map.bytes()
        } else {
            self.map.bytes()
        };
        let start = s.name_offset as usize;
        let name = bytes.get(start..start + s.name_len as usize)?;
        Some(FoundSymbol {
            addr: s.addr,
            name: std::str::from_utf8(name).ok()?,
        })
    }

    /// The bytes of DWARF section `id` (empty when absent).
    pub(crate) fn section(&self, id: gimli::SectionId) -> &[u8] {
        let index = DWARF_SECTIONS.iter().position(|s| *s == id);
        match index.and_then(|i| self.sections.get(i)) {
            Some(SectionData::InMap(range)) => {
                self.dwarf_map.bytes().get(range.clone()).unwrap_or(&[])
            }
            Some(SectionData::Owned(bytes)) => bytes,
            Some(SectionData::Absent) | None => &[],
        }
    }

    /// The byte order of the file's data.
    pub(crate) fn endian(&self) -> gimli::RunTimeEndian {
        if self.little_endian {
            gimli::RunTimeEndian::Little
        } else {
            gimli::RunTimeEndian::Big
        }
    }

    /// Heap bytes held (the symbol index and decompressed sections; the map is not heap).
    pub(crate) fn heap_bytes(&self) -> usize {
        vec_bytes(&self.symbols)
            + vec_bytes(&self.sections)
            + self.owned_lengths().map(allocation_bytes).sum::<usize>()
            + allocation_bytes(std::mem::size_of::<Self>())
    }

    /// Heap bytes of the decompressed DWARF sections (0 when they are used in place).
    pub(crate) fn owned_dwarf_bytes(&self) -> usize {
        self.owned_lengths().sum()
    }

    /// The lengths of the sections held on the heap (decompressed).
    fn owned_lengths(&self) -> impl Iterator<Item = usize> + '_ {
        self.sections.iter().filter_map(|s| match s {
            SectionData::Owned(b) => Some(b.len()),
            _ => None,
        })
    }

    /// Forgets the DWARF sections (frees decompressed ones); symbols stay.
    pub(crate) fn drop_dwarf(&mut self) {
        for s in &mut self.sections {
            *s = SectionData::Absent;
        }
        self.sections.shrink_to_fit();
        self.has_dwarf = false;
    }

    /// Gives the mapped pages back to the page cache (see [`Mapped::release_pages`]).
    pub(crate) fn release_pages(&self) {
        self.map.release_pages();
        if !Arc::ptr_eq(&self.map, &self.dwarf_map) {
            self.dwarf_map.release_pages();
        }
    }
}

/// `/usr/lib/debug/.build-id/<first byte>/<rest>.debug`, if it exists.
fn separate_debug_file(build_id: &[u8]) -> Option<PathBuf> {
    let (first, rest) = build_id.split_first()?;
    let path = PathBuf::from(format!(
        "/usr/lib/debug/.build-id/{first:02x}/{}.debug",
        hex(rest)
    ));
    path.exists().then_some(path)
}

/// Where each of [`DWARF_SECTIONS`] is: a range of the map, or decompressed bytes.
fn read_sections(
    file: &object::File<'_>,
    base: &[u8],
    max_decompressed: usize,
    too_large: &mut bool,
) -> Vec<SectionData> {
    let sections: Vec<_> = DWARF_SECTIONS
        .iter()
        .map(|id| file.section_by_name(id.name()))
        .collect();
    // What decompressing would allocate, read from the sections' compression headers.
    let decompressed: u64 = sections
        .iter()
        .flatten()
        .filter_map(|section| section.compressed_file_range().ok())
        .filter(|range| range.format != object::CompressionFormat::None)
        .map(|range| range.uncompressed_size)
        .sum();
    if decompressed > max_decompressed as u64 {
        *too_large = true;
        return DWARF_SECTIONS.iter().map(|_| SectionData::Absent).collect();
    }
    sections
        .iter()
        .map(|section| {
            let Some(section) = section else {
                return SectionData::Absent;
            };
            match section.uncompressed_data() {
                Ok(std::borrow::Cow::Borrowed(bytes)) => match offset_in(base, bytes) {
                    Some(start) => SectionData::InMap(start..start + bytes.len()),
                    None => SectionData::Owned(bytes.into()),
                },
                Ok(std::borrow::Cow::Owned(bytes)) => SectionData::Owned(bytes.into()),
                Err(_) => SectionData::Absent,
            }
        })
        .collect()
}

/// The offset of `part` within `base`, when it lies inside it.
fn offset_in(base: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    (start + part.len() <= base.len()).then_some(start)
}

/// Defined function symbols, sorted by address (the full table, else the dynamic one);
/// names are recorded as offsets into `base`, the mapped file.
fn read_symbols(file: &object::File<'_>, base: &[u8]) -> Vec<SymbolEntry> {
    let collect = |iter: &mut dyn Iterator<Item = object::Symbol<'_, '_>>| -> Vec<SymbolEntry> {
        iter.filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                let name = s.name_bytes().ok()?;
                let offset = offset_in(base, name)?;
                Some(SymbolEntry {
                    addr: s.address(),
                    size: u32::try_from(s.size()).unwrap_or(u32::MAX),
                    name_offset: u32::try_from(offset).ok()?,
                    name_len: u32::try_from(name.len()).ok()?,
                })
            })
            .collect()
    };
    let mut symbols = collect(&mut file.symbols());
    if symbols.is_empty() {
        symbols = collect(&mut file.dynamic_symbols());
    }
    symbols.sort_by_key(|s| (s.addr, std::cmp::Reverse(s.size)));
    symbols.dedup_by_key(|s| s.addr);
    symbols.shrink_to_fit();
    symbols
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test binary with its DWARF sections compressed (as distributions ship debug
    /// files), by binutils' `objcopy`; `None` (skipped) without it, unless
    /// `SPAN_PROFILER_REQUIRE_TOOLS=1`.
    fn compressed_copy() -> Option<PathBuf> {
        let exe = std::env::current_exe().unwrap();
        let out = std::env::temp_dir().join(format!("span-profiler-zdebug-{}", std::process::id()));
        let status = std::process::Command::new("objcopy")
            .arg("--compress-debug-sections=zlib")
            .arg(&exe)
            .arg(&out)
            .status();
        match status {
            Ok(s) if s.success() => Some(out),
            other => {
                assert!(
                    std::env::var("SPAN_PROFILER_REQUIRE_TOOLS").as_deref() != Ok("1"),
                    "`objcopy` is required (SPAN_PROFILER_REQUIRE_TOOLS=1): {other:?}"
                );
                eprintln!("SKIPPED: `objcopy` cannot run: {other:?}");
                None
            }
        }
    }

    #[test]
    fn compressed_dwarf_over_the_limit_is_never_decompressed() {
        let Some(path) = compressed_copy() else {
            return;
        };
        let whole = ObjectFile::open(&path, usize::MAX).expect("the copy opens");
        assert!(whole.has_dwarf && !whole.dwarf_too_large);
        let decompressed = whole.owned_dwarf_bytes();
        assert!(decompressed > 1 << 20, "{decompressed} bytes decompressed");
        drop(whole);

        let limited = ObjectFile::open(&path, decompressed - 1).expect("the copy opens");
        let _ = std::fs::remove_file(&path);
        assert!(!limited.has_dwarf && limited.dwarf_too_large);
        assert_eq!(limited.owned_dwarf_bytes(), 0);
        // Function names stay.
        assert!(limited.has_symbols());
    }
}
