//! Addresses to functions, files and lines, off the signal path and cached per address.
//!
//! Callers pass the address to look up: the interrupted PC for a leaf frame, and
//! `return_address - 1` for every caller frame (a return address points *after* the call,
//! which may already be the next line or even the next function). The encoder does that
//! adjustment.
//!
//! Each module's ELF file is read from disk the first time one of its addresses is looked
//! up: DWARF line tables and inlined-function records through `addr2line`, the symbol
//! table (or the dynamic symbol table) as a fallback, the build id from its note. When the
//! file itself has no DWARF, `/usr/lib/debug/.build-id/xx/yyyy.debug` is tried. An address
//! nothing knows still gets a frame, named `<module>+0x<offset>` or `0x<address>`.
//!
//! File and line numbers need debug info in the application's build: at least
//! `debug = "line-tables-only"` in its release profile.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

use crate::modules::{loaded_modules, Module};
use crate::symbolize::SYMBOLIZE;

/// The DWARF reader: owned, reference-counted section data, so contexts are `Send`.
type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// How often an address outside every known module may trigger a new module scan (a
/// library loaded with `dlopen` after the last scan).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// One function frame of a symbolized address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameSymbol {
    /// Demangled name without the hash suffix (`crate::module::function`), or a hex name.
    pub(crate) name: Arc<str>,
    /// The name as the symbol table has it (mangled for Rust).
    pub(crate) system_name: Arc<str>,
    /// Source file, empty when unknown.
    pub(crate) file: Arc<str>,
    /// Line in `file` (for inlined callers: the line of the inlined call), 0 when unknown.
    pub(crate) line: u32,
    /// Line where the function starts (the line of its entry address), 0 when unknown
    /// (always for inlined frames).
    pub(crate) start_line: u32,
}

/// What one address stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Symbolized {
    /// Index into [`Symbolizer::modules`] of the module holding the address.
    pub(crate) module: Option<usize>,
    /// The frames at the address, innermost (inlined callee) first; never empty.
    pub(crate) frames: Vec<FrameSymbol>,
}

/// What a profile's `Mapping` says about one module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MappingInfo {
    pub(crate) name: Arc<str>,
    pub(crate) memory_start: u64,
    pub(crate) memory_limit: u64,
    pub(crate) file_offset: u64,
    /// Lowercase hex of the GNU build id, empty when the file has none.
    pub(crate) build_id: Arc<str>,
    /// Function names came from the symbol table or DWARF.
    pub(crate) has_functions: bool,
    /// File names and line numbers came from DWARF.
    pub(crate) has_filenames: bool,
    /// Inlined frames came from DWARF.
    pub(crate) has_inline_frames: bool,
}

/// A function from the symbol table.
struct Symbol {
    /// Address in the file's address space.
    addr: u64,
    /// Size in bytes; 0 when the table does not say.
    size: u64,
    name: Arc<str>,
}

/// What was read from one module's file.
struct ModuleDebug {
    dwarf: Option<addr2line::Context<Reader>>,
    /// Sorted by `addr`.
    symbols: Vec<Symbol>,
    build_id: Option<Vec<u8>>,
    /// Start line per function entry address (a cache of DWARF lookups).
    start_lines: HashMap<u64, u32>,
}

enum DebugState {
    NotLoaded,
    /// No file, unreadable, or not ELF: addresses get hex names.
    Unavailable,
    Loaded(Box<ModuleDebug>),
}

/// Symbolizes addresses of this process; one per collector, reused across windows.
pub(crate) struct Symbolizer {
    /// Modules in discovery order; indices are stable (rescans only append).
    modules: Vec<Module>,
    debug: Vec<DebugState>,
    cache: HashMap<usize, Arc<Symbolized>>,
    strings: HashSet<Arc<str>>,
    last_scan: Instant,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("modules", &self.modules.len())
            .field("cached_addresses", &self.cache.len())
            .finish()
    }
}

impl Symbolizer {
    /// Enumerates the loaded modules; their files are read lazily, on first use.
    pub(crate) fn new() -> Self {
        let modules = loaded_modules();
        let debug = modules.iter().map(|_| DebugState::NotLoaded).collect();
        Self {
            modules,
            debug,
            cache: HashMap::new(),
            strings: HashSet::new(),
            last_scan: Instant::now(),
        }
    }

    /// The modules known so far.
    #[cfg(test)]
    pub(crate) fn modules(&self) -> &[Module] {
        &self.modules
    }

    /// Number of distinct addresses cached.
    #[cfg(test)]
    pub(crate) fn cached_addresses(&self) -> usize {
        self.cache.len()
    }

    /// The frames at `addr` (a leaf PC, or a return address minus one), cached.
    pub(crate) fn symbolize(&mut self, addr: usize) -> Arc<Symbolized> {
        if let Some(hit) = self.cache.get(&addr) {
            return hit.clone();
        }
        let mut module = self.module_of(addr);
        if module.is_none() && self.last_scan.elapsed() >= RESCAN_INTERVAL {
            self.rescan();
            module = self.module_of(addr);
        }
        let frames = match module {
            Some(index) => self.lookup(index, addr),
            None => Vec::new(),
        };
        SYMBOLIZE.addresses_symbolized.incr();
        let frames = if frames.is_empty() {
            SYMBOLIZE.addresses_unresolved.incr();
            let name = match module {
                Some(index) => {
                    let m = &self.modules[index];
                    let base = m.name.rsplit('/').next().unwrap_or(&m.name);
                    format!("{base}+0x{:x}", addr.wrapping_sub(m.bias))
                }
                None => format!("0x{addr:x}"),
            };
            let name = self.intern(&name);
            let empty = self.intern("");
            vec![FrameSymbol {
                system_name: name.clone(),
                name,
                file: empty,
                line: 0,
                start_line: 0,
            }]
        } else {
            frames
        };
        let result = Arc::new(Symbolized { module, frames });
        self.cache.insert(addr, result.clone());
        result
    }

    /// The `Mapping` facts of module `index` (reads its file if not done yet).
    pub(crate) fn mapping_info(&mut self, index: usize) -> MappingInfo {
        self.ensure_loaded(index);
        let m = &self.modules[index];
        let memory_start = m.segments.iter().map(|s| s.start).min().unwrap_or(0) as u64;
        let memory_limit = m.segments.iter().map(|s| s.end).max().unwrap_or(0) as u64;
        let file_offset = m
            .segments
            .iter()
            .min_by_key(|s| s.start)
            .map_or(0, |s| s.file_offset);
        let (build_id, has_functions, has_filenames) = match &self.debug[index] {
            DebugState::Loaded(d) => (
                d.build_id.as_deref().map(hex).unwrap_or_default(),
                d.dwarf.is_some() || !d.symbols.is_empty(),
                d.dwarf.is_some(),
            ),
            _ => (String::new(), false, false),
        };
        let name = self.intern(&self.modules[index].name.clone());
        let build_id = self.intern(&build_id);
        MappingInfo {
            name,
            memory_start,
            memory_limit,
            file_offset,
            build_id,
            has_functions,
            has_filenames,
            has_inline_frames: has_filenames,
        }
    }

    /// Index of the module whose executable segment holds `addr`; newest first, so a
    /// library loaded where an unloaded one was wins.
    fn module_of(&self, addr: usize) -> Option<usize> {
        self.modules
            .iter()
            .rposition(|m| m.segment_of(addr).is_some())
    }

    /// Adds modules loaded since the last scan.
    fn rescan(&mut self) {
        self.last_scan = Instant::now();
        for m in loaded_modules() {
            let known = self
                .modules
                .iter()
                .any(|k| k.bias == m.bias && k.name == m.name);
            if !known {
                self.modules.push(m);
                self.debug.push(DebugState::NotLoaded);
            }
        }
    }

    fn ensure_loaded(&mut self, index: usize) {
        if matches!(self.debug[index], DebugState::NotLoaded) {
            let state = match self.modules[index].path.as_deref().and_then(load_debug) {
                Some(debug) => DebugState::Loaded(Box::new(debug)),
                None => DebugState::Unavailable,
            };
            self.debug[index] = state;
        }
    }

    /// DWARF frames (inlined callee first), names filled from the symbol table where
    /// DWARF has none. Empty when nothing names the address.
    fn lookup(&mut self, index: usize, addr: usize) -> Vec<FrameSymbol> {
        self.ensure_loaded(index);
        let svma = addr.wrapping_sub(self.modules[index].bias) as u64;
        let DebugState::Loaded(debug) = &mut self.debug[index] else {
            return Vec::new();
        };
        // (raw name, file, line) per frame, innermost first.
        let mut raw: Vec<(Option<String>, Option<String>, u32)> = Vec::new();
        if let Some(ctx) = &debug.dwarf {
            if let Ok(mut iter) = ctx.find_frames(svma).skip_all_loads() {
                while let Ok(Some(frame)) = iter.next() {
                    let name = frame
                        .function
                        .as_ref()
                        .and_then(|f| f.raw_name().ok())
                        .map(|n| n.into_owned());
                    let (file, line) = match &frame.location {
                        Some(loc) => (loc.file.map(str::to_owned), loc.line.unwrap_or(0)),
                        None => (None, 0),
                    };
                    raw.push((name, file, line));
                }
            }
        }
        let symbol = find_symbol(&debug.symbols, svma).map(|s| (s.addr, s.name.clone()));
        if raw.is_empty() {
            match &symbol {
                Some((_, name)) => raw.push((Some(name.to_string()), None, 0)),
                None => return Vec::new(),
            }
        }
        // The outermost frame is the real (not inlined) function.
        if let Some(last) = raw.last_mut() {
            if last.0.is_none() {
                last.0 = symbol.as_ref().map(|(_, n)| n.to_string());
            }
        }
        let start_line = match (&symbol, &debug.dwarf) {
            (Some((entry, _)), Some(ctx)) => {
                *debug.start_lines.entry(*entry).or_insert_with(|| {
                    ctx.find_location(*entry)
                        .ok()
                        .flatten()
                        .and_then(|l| l.line)
                        .unwrap_or(0)
                })
            }
            _ => 0,
        };
        let outermost = raw.len() - 1;
        let mut frames = Vec::with_capacity(raw.len());
        for (i, (name, file, line)) in raw.into_iter().enumerate() {
            let system_name = match name {
                Some(n) => n,
                None => format!(
                    "{}+0x{svma:x}",
                    self.modules[index].name.rsplit('/').next().unwrap_or("")
                ),
            };
            let name = demangle(&system_name);
            frames.push(FrameSymbol {
                name: self.intern(&name),
                system_name: self.intern(&system_name),
                file: self.intern(file.as_deref().unwrap_or("")),
                line,
                start_line: if i == outermost { start_line } else { 0 },
            });
        }
        frames
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(hit) = self.strings.get(s) {
            return hit.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.strings.insert(arc.clone());
        arc
    }
}

/// Rust names demangled without their hash (`{:#}`); other names unchanged.
fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_owned(),
    }
}

/// The symbol containing `addr`: the last one starting at or before it, if its size (when
/// known) covers it.
fn find_symbol(symbols: &[Symbol], addr: u64) -> Option<&Symbol> {
    let i = symbols.partition_point(|s| s.addr <= addr).checked_sub(1)?;
    let s = &symbols[i];
    (s.size == 0 || addr < s.addr + s.size).then_some(s)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Reads one module's file: build id, symbols and DWARF (from a separate debug file when
/// the module has none of its own). `None` when the file cannot be read or parsed.
fn load_debug(path: &Path) -> Option<ModuleDebug> {
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let build_id = file.build_id().ok().flatten().map(<[u8]>::to_vec);
    let mut symbols = read_symbols(&file);
    let mut dwarf = load_dwarf(&file);
    if dwarf.is_none() {
        if let Some(debug_path) = build_id.as_deref().and_then(separate_debug_file) {
            if let Ok(debug_data) = std::fs::read(&debug_path) {
                if let Ok(debug_file) = object::File::parse(&*debug_data) {
                    dwarf = load_dwarf(&debug_file);
                    let more = read_symbols(&debug_file);
                    if more.len() > symbols.len() {
                        symbols = more;
                    }
                }
            }
        }
    }
    Some(ModuleDebug {
        dwarf,
        symbols,
        build_id,
        start_lines: HashMap::new(),
    })
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

/// Defined function symbols, sorted by address (the full table, else the dynamic one).
fn read_symbols(file: &object::File<'_>) -> Vec<Symbol> {
    let collect = |iter: &mut dyn Iterator<Item = object::Symbol<'_, '_>>| -> Vec<Symbol> {
        iter.filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                let name = s.name().ok()?;
                Some(Symbol {
                    addr: s.address(),
                    size: s.size(),
                    name: Arc::from(name),
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
    symbols
}

/// An `addr2line` context over the file's DWARF, `None` when it has no line tables.
fn load_dwarf(file: &object::File<'_>) -> Option<addr2line::Context<Reader>> {
    file.section_by_name(".debug_line")?;
    let endian = if file.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = gimli::Dwarf::load(|id| -> Result<Reader, gimli::Error> {
        let data: Arc<[u8]> = match file
            .section_by_name(id.name())
            .map(|s| s.uncompressed_data())
        {
            Some(Ok(bytes)) => Arc::from(bytes.as_ref()),
            _ => Arc::from(&[][..]),
        };
        Ok(Reader::new(data, endian))
    })
    .ok()?;
    addr2line::Context::from_dwarf(dwarf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::frame_pointer_backtrace;

    #[inline(never)]
    fn leaf_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(41) + 1
    }

    #[inline(never)]
    fn innermost_caller() -> (Vec<usize>, u32) {
        let (frames, line) = (frame_pointer_backtrace(3), line!());
        std::hint::black_box(&frames);
        (frames, line)
    }

    #[inline(never)]
    fn middle_caller() -> (Vec<usize>, u32, u32) {
        let ((frames, inner_line), line) = (innermost_caller(), line!());
        std::hint::black_box(&frames);
        (frames, inner_line, line)
    }

    #[inline(always)]
    fn inlined_helper() -> (Vec<usize>, u32) {
        let (frames, line) = (frame_pointer_backtrace(1), line!());
        (frames, line)
    }

    #[inline(never)]
    fn caller_of_inlined_helper() -> (Vec<usize>, u32, u32) {
        let ((frames, helper_line), line) = (inlined_helper(), line!());
        std::hint::black_box(&frames);
        (frames, helper_line, line)
    }

    fn this_file() -> &'static str {
        file!()
    }

    #[test]
    fn a_function_address_names_the_function_its_file_and_start_line() {
        let mut s = Symbolizer::new();
        let addr = leaf_function_for_symbolizer_test as *const () as usize;
        let sym = s.symbolize(addr);
        assert_eq!(sym.module, Some(0), "the test binary is the main program");
        let outer = sym.frames.last().unwrap();
        assert!(
            outer
                .name
                .ends_with("symbolizer::tests::leaf_function_for_symbolizer_test"),
            "{}",
            outer.name
        );
        assert!(
            outer.system_name.starts_with("_R") || outer.system_name.starts_with("_ZN"),
            "{}",
            outer.system_name
        );
        assert!(
            outer
                .file
                .ends_with(this_file().rsplit('/').next().unwrap()),
            "{}",
            outer.file
        );
        assert!(
            outer.start_line > 0 && outer.line >= outer.start_line,
            "{outer:?}"
        );
        assert!(
            Arc::ptr_eq(&sym, &s.symbolize(addr)),
            "second lookup comes from the cache"
        );
        assert_eq!(s.cached_addresses(), 1);
    }

    #[test]
    fn real_return_addresses_resolve_to_the_call_sites() {
        let (frames, inner_line, middle_line) = middle_caller();
        assert!(frames.len() >= 2, "{frames:x?}");
        let mut s = Symbolizer::new();
        // Caller frames are looked up at return address - 1, as the encoder does.
        let inner = s.symbolize(frames[0] - 1);
        let middle = s.symbolize(frames[1] - 1);
        let f = inner.frames.last().unwrap();
        assert!(f.name.ends_with("tests::innermost_caller"), "{f:?}");
        assert_eq!(f.line, inner_line, "{f:?}");
        assert!(f.file.ends_with("symbolizer.rs"));
        let f = middle.frames.last().unwrap();
        assert!(f.name.ends_with("tests::middle_caller"), "{f:?}");
        assert_eq!(f.line, middle_line, "{f:?}");
    }

    #[test]
    fn inlined_frames_come_as_several_lines_callee_first() {
        let (frames, helper_line, caller_line) = caller_of_inlined_helper();
        let mut s = Symbolizer::new();
        let sym = s.symbolize(frames[0] - 1);
        let names: Vec<&str> = sym.frames.iter().map(|f| &*f.name).collect();
        assert_eq!(sym.frames.len(), 2, "{names:?}");
        assert!(names[0].ends_with("tests::inlined_helper"), "{names:?}");
        assert_eq!(sym.frames[0].line, helper_line);
        assert_eq!(
            sym.frames[0].start_line, 0,
            "inlined frames have no start line"
        );
        assert!(
            names[1].ends_with("tests::caller_of_inlined_helper"),
            "{names:?}"
        );
        assert_eq!(sym.frames[1].line, caller_line);
    }

    #[test]
    fn libc_functions_get_names_from_the_dynamic_symbol_table() {
        let mut s = Symbolizer::new();
        let sym = s.symbolize(libc::getpid as *const () as usize);
        let module = sym.module.expect("libc is a module");
        assert!(s.modules()[module].name.contains("libc"));
        assert!(
            sym.frames.iter().any(|f| f.name.contains("getpid")),
            "{sym:?}"
        );
        let info = s.mapping_info(module);
        assert!(info.has_functions);
        assert_eq!(
            info.build_id.len(),
            40,
            "GNU build ids are 20 bytes: {}",
            info.build_id
        );
    }

    #[test]
    fn unknown_addresses_get_a_hex_name() {
        let mut s = Symbolizer::new();
        let sym = s.symbolize(0x10);
        assert_eq!(sym.module, None);
        assert_eq!(&*sym.frames[0].name, "0x10");
        assert_eq!(sym.frames[0].line, 0);
    }

    #[test]
    fn the_main_mapping_has_the_executable_path_and_its_build_id() {
        let mut s = Symbolizer::new();
        let info = s.mapping_info(0);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(&*info.name, exe.display().to_string());
        assert!(info.has_functions && info.has_filenames);
        assert!(
            info.memory_start <= leaf_function_for_symbolizer_test as *const () as usize as u64
        );
        assert!(info.memory_limit > leaf_function_for_symbolizer_test as *const () as usize as u64);
        let expected = std::fs::read(&exe).ok().and_then(|d| {
            let f = object::File::parse(&*d).ok()?;
            f.build_id().ok().flatten().map(hex)
        });
        assert_eq!(
            Some(info.build_id.to_string()).filter(|b| !b.is_empty()),
            expected
        );
    }
}
