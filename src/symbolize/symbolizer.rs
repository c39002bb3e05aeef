//! Addresses to functions, files and lines, off the signal path and cached per address,
//! within a memory budget.
//!
//! Callers pass the address to look up: the interrupted PC for a leaf frame, and
//! `return_address - 1` for every caller frame (a return address points *after* the call,
//! which may already be the next line or even the next function). The encoder does that
//! adjustment.
//!
//! Each module's file is mapped the first time one of its addresses is looked up
//! ([`ObjectFile`]): its function symbols are indexed, its DWARF units only located.
//! A lookup then takes the function's name from the symbol table (demangled, full path)
//! and, with [`SymbolDetail::Full`], parses the one DWARF unit holding the address for
//! its file, line and inlined frames ([`DwarfUnits`]). When the file has no DWARF,
//! `/usr/lib/debug/.build-id/xx/yyyy.debug` is tried. An address nothing knows still gets
//! a frame, named `<module>+0x<offset>` or `0x<address>`. Names follow the rules of
//! [`names`](crate::symbolize::names): no generic arguments in `name`, the full symbol in
//! `system_name`.
//!
//! Memory: see [`Symbolization`]. File and line numbers need debug info in the
//! application's build: at least `debug = "line-tables-only"` in its release profile.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::id_hash::IdHashBuilder;
use crate::modules::{loaded_modules, Module};
use crate::symbolize::dwarf::{DwarfFrame, DwarfUnits, ParseCount};
use crate::symbolize::names;
use crate::symbolize::objfile::{hex, ObjectFile};
use crate::symbolize::strings::StringSet;
use crate::symbolize::symbolization::{SymbolDetail, Symbolization};
use crate::symbolize::{allocation_bytes, sparse, table_bytes, SYMBOLIZE};

/// How often an address outside every known module may trigger a new module scan (a
/// library loaded with `dlopen` after the last scan).
const RESCAN_INTERVAL: Duration = Duration::from_secs(1);

/// One function frame of a symbolized address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameSymbol {
    /// Readable name: demangled, without hash and generic arguments
    /// (`<axum::handler::future::IntoServiceFuture as core::future::future::Future>::poll`),
    /// or a hex name.
    pub(crate) name: Arc<str>,
    /// The full name: the symbol as the symbol table has it (mangled for Rust), or for an
    /// inlined frame its DWARF linkage name, else its DWARF name.
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
    /// The module is the main program (not a shared object).
    pub(crate) is_main: bool,
}

/// The symbolizer's own tallies and sizes, for `stats()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Footprint {
    /// Heap bytes held now (indexes, parsed units, address cache, names).
    pub(crate) bytes: u64,
    /// Of `bytes`, the symbol and unit indexes (what no eviction frees).
    pub(crate) index_bytes: u64,
    /// Addresses in the cache now.
    pub(crate) cache_entries: u64,
    /// Debug-info units parsed and kept now.
    pub(crate) units_kept: u64,
    /// Debug-info units parsed so far (a unit dropped and parsed again counts twice).
    pub(crate) units_parsed: u64,
    /// Parsed units dropped to stay within the budget.
    pub(crate) units_evicted: u64,
    /// Times the address cache was emptied to stay within the budget.
    pub(crate) cache_flushes: u64,
    /// Cached addresses dropped after [`KEEP_UNUSED`] without a lookup.
    pub(crate) addresses_expired: u64,
    /// Parsed units dropped after [`KEEP_UNUSED`] without a lookup.
    pub(crate) units_expired: u64,
    /// Addresses named from the symbol table only (no file, line or inlined frames)
    /// because the indexes alone filled the budget.
    pub(crate) symbol_only: u64,
    /// Debug-info units that could not be parsed (their addresses keep symbol names).
    pub(crate) dwarf_errors: u64,
}

/// What was read from one module's file.
struct ModuleDebug {
    file: ObjectFile,
    /// The file's DWARF units; `None` without DWARF or with [`SymbolDetail::FunctionsOnly`].
    dwarf: Option<DwarfUnits>,
    /// Start line per function entry address (a cache of DWARF lookups), with the window
    /// it was last used in.
    start_lines: HashMap<u64, (u32, u32), IdHashBuilder>,
    /// The DWARF index was dropped because the indexes alone exceeded the budget, or
    /// never built because decompressing the DWARF would have.
    dwarf_dropped: bool,
}

impl ModuleDebug {
    /// Heap bytes of what stays however the budget is pressed (the indexes).
    fn index_bytes(&self) -> usize {
        self.file.heap_bytes()
            + self.dwarf.as_ref().map_or(0, DwarfUnits::index_bytes)
            + table_bytes::<(u64, (u32, u32))>(self.start_lines.capacity())
    }
}

enum DebugState {
    NotLoaded,
    /// No file, unreadable, or not ELF: addresses get hex names.
    Unavailable,
    Loaded(Box<ModuleDebug>),
}

/// The address to symbolize for frame `depth` of a sampled stack: the leaf's PC itself,
/// and for callers the return address minus one (inside the call instruction, so that
/// the call's own line and inlined frames are found, not the next statement's).
pub(crate) fn lookup_address(depth: usize, frame: usize) -> usize {
    if depth == 0 {
        frame
    } else {
        frame.saturating_sub(1)
    }
}

/// The addresses to symbolize for sampled `stacks` (leaf first), with repeats.
pub(crate) fn lookup_addresses(stacks: &[Arc<[usize]>]) -> impl Iterator<Item = usize> + '_ {
    stacks.iter().flat_map(|frames| {
        frames
            .iter()
            .enumerate()
            .map(|(depth, &frame)| lookup_address(depth, frame))
    })
}

/// The file inlined frame `i` of `frames` shows, and the file its name is derived from.
/// A row with line 0 is code the compiler made without a source line: its file is the
/// unit's, whatever function the code belongs to (an allocation inlined into an
/// application function shows the application's file), so it locates nothing. Such a
/// frame shows no file, and its name is derived from the file it was called from (the
/// next frame out), the closest thing to where it is defined that the line table gives.
fn inlined_frame_files(frames: &[DwarfFrame], i: usize) -> (&str, &str) {
    let own = frames[i].file.as_deref().unwrap_or("");
    if frames[i].line != 0 {
        return (own, own);
    }
    let caller = frames.get(i + 1).and_then(|f| f.file.as_deref());
    ("", caller.unwrap_or(""))
}

/// Heap bytes of one cache entry holding `frames` frames (the `Arc` allocation and the
/// frame vector; its table slot is counted with the table, the strings where they are
/// interned).
fn entry_bytes(frames: usize) -> usize {
    allocation_bytes(2 * std::mem::size_of::<usize>() + std::mem::size_of::<Symbolized>())
        + allocation_bytes(frames * std::mem::size_of::<FrameSymbol>())
}

/// How long a cached address, a parsed unit or a start line may go unused before it is
/// dropped (at the end of a window): the symbolizer keeps what recent windows needed, so
/// its memory follows the working set instead of filling the budget with addresses seen
/// once an hour ago.
const KEEP_UNUSED: Duration = Duration::from_secs(60);

/// A cached address: its frames and the window it was last looked up in.
struct CacheEntry {
    symbolized: Arc<Symbolized>,
    window: u32,
}

/// Gives a map's memory back when it is [`sparse`].
fn shrink_if_sparse<K: std::hash::Hash + Eq, V, S: std::hash::BuildHasher>(
    table: &mut HashMap<K, V, S>,
) {
    if sparse(table.capacity(), table.len()) {
        table.shrink_to_fit();
    }
}

/// Symbolizes addresses of this process; one per writer, reused across windows.
pub(crate) struct Symbolizer {
    options: Symbolization,
    /// Modules in discovery order; indices are stable (rescans only append).
    modules: Vec<Module>,
    debug: Vec<DebugState>,
    cache: HashMap<usize, CacheEntry, IdHashBuilder>,
    /// Heap bytes of the cache's entries (not of its table).
    cache_bytes: usize,
    /// Names and files of the cached frames.
    strings: StringSet,
    last_scan: Instant,
    counts: Footprint,
    /// Windows ended so far: the number of the window being symbolized now.
    window: u32,
    /// When each window not yet [`KEEP_UNUSED`] old ended, oldest first.
    window_ends: std::collections::VecDeque<(Instant, u32)>,
    /// Crate names of local packages, read from their manifests.
    crate_names: names::CrateNames,
    /// The system name and readable name of the function of the last lookup (interned):
    /// the next address is often in the same function, and demangling is costly.
    last_function: Option<(Arc<str>, Arc<str>)>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("options", &self.options)
            .field("modules", &self.modules.len())
            .field("cached_addresses", &self.cache.len())
            .finish()
    }
}

impl Symbolizer {
    /// A symbolizer with the default options.
    #[cfg(any(test, feature = "__internal"))]
    pub(crate) fn new() -> Self {
        Self::with_options(Symbolization::default())
    }

    /// Enumerates the loaded modules; their files are mapped lazily, on first use.
    pub(crate) fn with_options(options: Symbolization) -> Self {
        let modules = loaded_modules();
        let debug = modules.iter().map(|_| DebugState::NotLoaded).collect();
        Self {
            options,
            modules,
            debug,
            cache: HashMap::default(),
            cache_bytes: 0,
            strings: StringSet::default(),
            last_scan: Instant::now(),
            counts: Footprint::default(),
            window: 0,
            window_ends: std::collections::VecDeque::new(),
            crate_names: names::CrateNames::default(),
            last_function: None,
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

    /// Sizes and tallies now.
    pub(crate) fn footprint(&self) -> Footprint {
        let mut f = self.counts;
        f.bytes = (self.index_bytes() + self.parsed_bytes() + self.cached_bytes()) as u64;
        f.index_bytes = self.index_bytes() as u64;
        f.cache_entries = self.cache.len() as u64;
        f.units_kept = self
            .loaded()
            .filter_map(|d| d.dwarf.as_ref())
            .map(|d| d.parsed_units() as u64)
            .sum();
        f
    }

    /// Called after each window is encoded: gives the mapped files' pages back to the
    /// page cache, and drops what has not been used for [`KEEP_UNUSED`] (parsed state
    /// used since stays, within the budget).
    pub(crate) fn end_window(&mut self) {
        self.end_window_at(Instant::now());
    }

    /// [`Self::end_window`] with the time it happens at (tests pass their own).
    pub(crate) fn end_window_at(&mut self, now: Instant) {
        for d in self.loaded() {
            d.file.release_pages();
        }
        self.window_ends.push_back((now, self.window));
        self.window = self.window.wrapping_add(1);
        // The newest window that ended at least `KEEP_UNUSED` ago: whatever was last used
        // in it or before goes.
        let mut expired = None;
        while let Some(&(ended, number)) = self.window_ends.front() {
            if now.saturating_duration_since(ended) < KEEP_UNUSED {
                break;
            }
            expired = Some(number);
            self.window_ends.pop_front();
        }
        if let Some(number) = expired {
            self.drop_unused_since(number.wrapping_add(1));
        }
    }

    /// Drops cache entries, parsed units and start lines last used before window `first`
    /// (and the interned names only they held).
    fn drop_unused_since(&mut self, first: u32) {
        // Window numbers only grow (a wrap takes 4 billion windows).
        let stale = |window: u32| window < first;
        let before = self.cache.len();
        let mut freed = 0;
        self.cache.retain(|_, entry| {
            let keep = !stale(entry.window);
            if !keep {
                freed += entry_bytes(entry.symbolized.frames.len());
            }
            keep
        });
        self.cache_bytes -= freed;
        self.counts.addresses_expired += (before - self.cache.len()) as u64;
        for d in self.debug.iter_mut() {
            if let DebugState::Loaded(d) = d {
                if let Some(dwarf) = d.dwarf.as_mut() {
                    self.counts.units_expired += dwarf.drop_unused_since(first);
                }
                d.start_lines.retain(|_, (_, window)| !stale(*window));
                shrink_if_sparse(&mut d.start_lines);
            }
        }
        if before != self.cache.len() {
            shrink_if_sparse(&mut self.cache);
            // Names no cached address (and no memo) holds any more.
            self.strings.sweep();
        }
    }

    /// Up to `n` distinct run-time addresses in the main program's code, spread evenly
    /// over its symbol table: function starts, and points between one function's start
    /// and the next when there are fewer functions than `n` (for benchmarks and tests).
    #[cfg(any(test, feature = "__internal"))]
    pub(crate) fn main_program_addresses(&mut self, n: usize) -> Vec<usize> {
        if self.modules.is_empty() {
            return Vec::new();
        }
        self.ensure_loaded(0);
        let bias = self.modules[0].bias;
        let DebugState::Loaded(d) = &self.debug[0] else {
            return Vec::new();
        };
        let starts: Vec<u64> = d.file.function_addresses().collect();
        let per_function = n.div_ceil(starts.len().max(1)) as u64;
        let mut all: Vec<u64> = Vec::with_capacity(starts.len() * per_function as usize);
        for (i, &start) in starts.iter().enumerate() {
            let len = starts
                .get(i + 1)
                .map_or(1, |next| next.saturating_sub(start));
            all.extend((0..per_function.min(len)).map(|k| start + k * len / per_function));
        }
        let step = (all.len() / n.max(1)).max(1);
        all.iter()
            .step_by(step)
            .take(n)
            .map(|&a| (a as usize).wrapping_add(bias) + 1)
            .filter(|&a| self.modules[0].segment_of(a).is_some())
            .collect()
    }

    fn loaded(&self) -> impl Iterator<Item = &ModuleDebug> {
        self.debug.iter().filter_map(|d| match d {
            DebugState::Loaded(d) => Some(&**d),
            _ => None,
        })
    }

    fn index_bytes(&self) -> usize {
        self.loaded().map(ModuleDebug::index_bytes).sum::<usize>() + self.crate_names.heap_bytes()
    }

    /// Heap bytes of the address cache and the interned strings, tables included.
    fn cached_bytes(&self) -> usize {
        self.cache_bytes
            + table_bytes::<(usize, CacheEntry)>(self.cache.capacity())
            + self.strings.heap_bytes()
    }

    fn parsed_bytes(&self) -> usize {
        self.loaded()
            .filter_map(|d| d.dwarf.as_ref())
            .map(|d| d.heap_bytes() - d.index_bytes())
            .sum()
    }

    /// Symbolizes those of a window's addresses (see [`lookup_addresses`]) that are not
    /// cached yet, in address order: neighbouring addresses share a debug-info unit, so
    /// each unit is parsed once for the window instead of evicted and parsed again as the
    /// samples' order jumps between units. Stops early if the cache had to be emptied
    /// (the window's addresses do not fit the budget): the encoder then looks them up as
    /// it goes, as without this.
    pub(crate) fn prepare(&mut self, addrs: impl IntoIterator<Item = usize>) {
        // A set first: a window repeats its addresses over thousands of stacks.
        let cold: HashSet<usize, IdHashBuilder> = addrs
            .into_iter()
            .filter(|addr| !self.cache.contains_key(addr))
            .collect();
        let mut cold: Vec<usize> = cold.into_iter().collect();
        cold.sort_unstable();
        let flushes = self.counts.cache_flushes;
        for addr in cold {
            self.symbolize(addr);
            if self.counts.cache_flushes != flushes {
                break;
            }
        }
    }

    /// The frames at `addr` (a leaf PC, or a return address minus one), cached.
    pub(crate) fn symbolize(&mut self, addr: usize) -> Arc<Symbolized> {
        if let Some(hit) = self.cache.get_mut(&addr) {
            hit.window = self.window;
            return hit.symbolized.clone();
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
        self.cache_bytes += entry_bytes(result.frames.len());
        self.cache.insert(
            addr,
            CacheEntry {
                symbolized: result.clone(),
                window: self.window,
            },
        );
        self.enforce_budget();
        result
    }

    /// Brings the heap back within the budget: drops parsed units (least recently used
    /// first), then empties the address cache and the names.
    fn enforce_budget(&mut self) {
        let budget = self.options.budget();
        // The indexes may take at most half the budget, so that units can be parsed:
        // beyond that, the module with the largest debug-info index (typically a system
        // library's decompressed separate debug file) loses its DWARF, and its addresses
        // get symbol-table names only from now on.
        while self.index_bytes() > budget / 2 {
            let largest = self
                .debug
                .iter_mut()
                .filter_map(|d| match d {
                    DebugState::Loaded(d) if d.dwarf.is_some() => Some(d),
                    _ => None,
                })
                .max_by_key(|d| {
                    d.file.owned_dwarf_bytes() + d.dwarf.as_ref().map_or(0, DwarfUnits::index_bytes)
                });
            let Some(d) = largest else { break };
            d.dwarf = None;
            d.file.drop_dwarf();
            d.dwarf_dropped = true;
            d.start_lines = HashMap::default();
        }
        let fixed = self.index_bytes();
        let room = budget.saturating_sub(fixed + self.cached_bytes());
        if self.parsed_bytes() > room {
            let mut left = room;
            // Modules in order; each keeps what fits after the ones before it.
            for d in self.debug.iter_mut() {
                if let DebugState::Loaded(d) = d {
                    if let Some(dwarf) = d.dwarf.as_mut() {
                        let parsed = dwarf.heap_bytes() - dwarf.index_bytes();
                        let keep = parsed.min(left);
                        self.counts.units_evicted += dwarf.evict_to(keep);
                        left -= dwarf.heap_bytes() - dwarf.index_bytes();
                    }
                }
            }
        }
        if fixed + self.parsed_bytes() + self.cached_bytes() > budget {
            self.cache.clear();
            self.cache.shrink_to_fit();
            self.strings.clear();
            self.last_function = None;
            self.cache_bytes = 0;
            self.counts.cache_flushes += 1;
        }
    }

    /// The `Mapping` facts of module `index` (maps its file if not done yet).
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
                d.file.build_id.as_deref().map(hex).unwrap_or_default(),
                d.dwarf.is_some() || d.file.has_symbols(),
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
            is_main: self.modules[index].is_main,
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
            let full = self.options.detail() == SymbolDetail::Full;
            // Decompressed DWARF counts as index, and the indexes may take half the budget
            // (see `enforce_budget`); with function names only, nothing is decompressed.
            let max_decompressed = if full { self.options.budget() / 2 } else { 0 };
            let state = match self.modules[index]
                .path
                .as_deref()
                .and_then(|path| ObjectFile::open(path, max_decompressed))
            {
                Some(file) => {
                    let dwarf = (full && file.has_dwarf).then(|| DwarfUnits::index(&file));
                    // Indexing read every symbol and unit header once; none is needed now.
                    file.release_pages();
                    DebugState::Loaded(Box::new(ModuleDebug {
                        dwarf_dropped: full && file.dwarf_too_large,
                        file,
                        dwarf,
                        start_lines: HashMap::default(),
                    }))
                }
                None => DebugState::Unavailable,
            };
            self.debug[index] = state;
        }
    }

    /// The frames at `addr` in module `index`, inlined callees first, the function itself
    /// last. Empty when nothing names the address.
    fn lookup(&mut self, index: usize, addr: usize) -> Vec<FrameSymbol> {
        self.ensure_loaded(index);
        let svma = addr.wrapping_sub(self.modules[index].bias) as u64;
        // With the indexes alone over the budget, no DWARF is parsed at all.
        let dwarf_allowed = self.index_bytes() < self.options.budget();
        let DebugState::Loaded(debug) = &mut self.debug[index] else {
            return Vec::new();
        };
        let debug = &mut **debug;
        let mut count = ParseCount::default();
        let dwarf_frames = match debug.dwarf.as_mut() {
            Some(dwarf) if dwarf_allowed => {
                dwarf.frames(&debug.file, svma, true, self.window, &mut count)
            }
            Some(_) => {
                self.counts.symbol_only += 1;
                Vec::new()
            }
            None if debug.dwarf_dropped => {
                self.counts.symbol_only += 1;
                Vec::new()
            }
            None => Vec::new(),
        };
        let symbol = debug.file.symbol(svma);
        let start_line = match (symbol, debug.dwarf.as_mut()) {
            (Some(symbol), Some(dwarf)) if dwarf_allowed => {
                match debug.start_lines.get_mut(&symbol.addr) {
                    Some((line, window)) => {
                        *window = self.window;
                        *line
                    }
                    None => {
                        let line = dwarf
                            .line_at(&debug.file, symbol.addr, self.window, &mut count)
                            .unwrap_or(0);
                        debug.start_lines.insert(symbol.addr, (line, self.window));
                        line
                    }
                }
            }
            _ => 0,
        };
        self.counts.units_parsed += count.units_parsed;
        self.counts.dwarf_errors += count.errors;
        let outer = match symbol {
            Some(symbol) => {
                // Addresses come in address order (see `prepare`): most share the
                // function of the one before.
                let readable = match &self.last_function {
                    Some((system, readable)) if **system == *symbol.name => readable.to_string(),
                    _ => names::without_generics(&names::demangle(symbol.name)),
                };
                Some((readable, symbol.name.to_owned()))
            }
            // DWARF knows the address but the symbol table does not (stripped symbols).
            None if !dwarf_frames.is_empty() => {
                let base = self.modules[index].name.rsplit('/').next().unwrap_or("");
                let hex_name = format!("{base}+0x{svma:x}");
                Some((hex_name.clone(), hex_name))
            }
            None => None,
        };
        // (name, system name, file, line) per frame, innermost first.
        let mut raw: Vec<(String, String, String, u32)> = Vec::with_capacity(dwarf_frames.len());
        let (outer_file, outer_line) = match dwarf_frames.last() {
            Some(f) => (f.file.as_deref().unwrap_or("").to_owned(), f.line),
            None => (String::new(), 0),
        };
        // The enclosing function's symbol names the crate of inlined code from its own
        // crate (see `names`).
        let hint = match (&outer, symbol) {
            (Some((name, _)), Some(_)) => Some(names::CrateHint {
                function: name,
                file: &outer_file,
            }),
            _ => None,
        };
        for (i, frame) in dwarf_frames.iter().enumerate() {
            if let Some(inlined) = &frame.inlined {
                let (file, naming_file) = inlined_frame_files(&dwarf_frames, i);
                let name = names::inlined_name(
                    inlined.linkage.as_deref(),
                    &inlined.name,
                    naming_file,
                    hint,
                    &mut self.crate_names,
                );
                let system_name = match (&inlined.linkage, inlined.name.is_empty()) {
                    (Some(linkage), _) => linkage.to_string(),
                    (None, false) => inlined.name.to_string(),
                    (None, true) => name.clone(),
                };
                raw.push((name, system_name, file.to_owned(), frame.line));
            }
        }
        let named_by_symbol = symbol.is_some();
        let Some((outer_name, outer_system)) = outer else {
            return Vec::new();
        };
        raw.push((outer_name, outer_system, outer_file, outer_line));
        let outermost = raw.len() - 1;
        let mut frames = Vec::with_capacity(raw.len());
        for (i, (name, system_name, file, line)) in raw.into_iter().enumerate() {
            frames.push(FrameSymbol {
                name: self.intern(&name),
                system_name: self.intern(&system_name),
                file: self.intern(&file),
                line,
                start_line: if i == outermost { start_line } else { 0 },
            });
        }
        if let (true, Some(f)) = (named_by_symbol, frames.last()) {
            self.last_function = Some((f.system_name.clone(), f.name.clone()));
        }
        frames
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        self.strings.intern(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::return_addresses_here;
    use crate::symbolize::symbolization::DEFAULT_SYMBOLIZER_BUDGET;

    #[inline(never)]
    fn leaf_function_for_symbolizer_test() -> u64 {
        std::hint::black_box(41) + 1
    }

    #[inline(never)]
    fn innermost_caller() -> (Vec<usize>, u32) {
        let (frames, line) = (return_addresses_here(3), line!());
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
        let (frames, line) = (return_addresses_here(1), line!());
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
    fn an_inlined_frame_at_line_0_is_named_from_where_it_was_called() {
        let frame = |inlined: Option<&str>, file: &str, line| DwarfFrame {
            inlined: inlined.map(|n| crate::symbolize::dwarf::DwarfName {
                name: Arc::from(n),
                linkage: None,
            }),
            file: Some(Arc::from(file)),
            line,
        };
        let raw_vec =
            "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/alloc/src/raw_vec/mod.rs";
        let app = "/work/shop/src/main.rs";
        let frames = [
            frame(Some("try_allocate_in"), app, 0),
            frame(Some("with_capacity_in"), raw_vec, 433),
            frame(None, app, 42),
        ];
        assert_eq!(inlined_frame_files(&frames, 0), ("", raw_vec));
        assert_eq!(inlined_frame_files(&frames, 1), (raw_vec, raw_vec));
        let mut crates = names::CrateNames::default();
        let hint = names::CrateHint {
            function: "shop::render",
            file: app,
        };
        let name = names::inlined_name(None, "try_allocate_in", raw_vec, Some(hint), &mut crates);
        assert_eq!(name, "alloc::raw_vec::try_allocate_in");
    }

    #[test]
    fn what_goes_unused_for_a_minute_is_dropped_and_what_is_used_stays() {
        // A budget nothing here reaches: what goes, goes for being unused.
        let mut s = Symbolizer::with_options(Symbolization::full().memory_budget(256 << 20));
        let addrs = s.main_program_addresses(2_000);
        let (old, recent) = addrs.split_at(1_000);
        let t0 = Instant::now();
        let first: Vec<_> = old.iter().map(|&a| s.symbolize(a)).collect();
        s.end_window_at(t0);
        let with_old = s.footprint();
        assert_eq!(with_old.cache_entries, old.len() as u64);
        // Six more windows over a minute: only `recent` is looked up, in each of them.
        for i in 1..=6u64 {
            for &a in recent {
                s.symbolize(a);
            }
            s.end_window_at(t0 + Duration::from_secs(10 * i + 1));
        }
        let f = s.footprint();
        assert_eq!(f.addresses_expired, old.len() as u64, "{f:?}");
        assert_eq!(f.cache_entries, recent.len() as u64, "{f:?}");
        assert!(f.units_expired > 0, "{f:?}");
        assert!(f.units_kept > 0, "{f:?}");
        // About what a symbolizer that only ever saw `recent` holds.
        let mut fresh = Symbolizer::with_options(Symbolization::full().memory_budget(256 << 20));
        for &a in recent {
            fresh.symbolize(a);
        }
        let only_recent = fresh.footprint();
        assert!(
            f.bytes <= only_recent.bytes + only_recent.bytes / 10,
            "{f:?}, {with_old:?} before, {only_recent:?} fresh"
        );
        // What was dropped is found again, the same.
        for (&a, before) in old.iter().zip(&first) {
            assert_eq!(*s.symbolize(a), **before, "address {a:#x}");
        }
        // Looked up in every window, an address is never dropped, however long it runs.
        let kept = s.footprint().addresses_expired;
        for i in 7..=20u64 {
            for &a in recent {
                s.symbolize(a);
            }
            s.end_window_at(t0 + Duration::from_secs(10 * i + 1));
        }
        let f = s.footprint();
        assert_eq!(f.addresses_expired, kept + old.len() as u64, "{f:?}");
        assert_eq!(f.cache_entries, recent.len() as u64, "{f:?}");
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
        assert!(
            sym.frames[1].file.ends_with("symbolizer.rs"),
            "the caller's file is the inlined call's file: {:?}",
            sym.frames[1]
        );
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
            object::Object::build_id(&f).ok().flatten().map(hex)
        });
        assert_eq!(
            Some(info.build_id.to_string()).filter(|b| !b.is_empty()),
            expected
        );
    }

    /// Addresses of distinct functions of this test binary (real code, many units).
    fn some_code_addresses() -> Vec<usize> {
        let mut s = Symbolizer::new();
        let main = s.modules()[0].clone();
        s.ensure_loaded(0);
        let DebugState::Loaded(d) = &s.debug[0] else {
            panic!("the test binary loads")
        };
        let seg = main.segments[0];
        // Every 4 KiB of the first executable segment, up to 400 addresses.
        (seg.start..seg.end)
            .step_by(4096)
            .filter(|&a| d.file.symbol((a - main.bias) as u64).is_some())
            .take(400)
            .collect()
    }

    #[test]
    fn the_footprint_counts_the_cache_and_the_parsed_units() {
        let mut s = Symbolizer::new();
        let addrs = some_code_addresses();
        for &a in &addrs {
            s.symbolize(a);
        }
        let f = s.footprint();
        assert_eq!(f.cache_entries, addrs.len() as u64);
        assert!(f.units_parsed >= 1 && f.units_kept >= 1, "{f:?}");
        assert!(
            f.bytes > 0 && f.bytes <= DEFAULT_SYMBOLIZER_BUDGET as u64,
            "{f:?}"
        );
    }

    #[test]
    fn a_tight_budget_drops_parsed_units_and_never_keeps_more_than_it_allows() {
        let addrs = some_code_addresses();
        let mut probe = Symbolizer::new();
        probe.symbolize(addrs[0]);
        // Room for the indexes (at most half the budget) and a little more: units must be
        // dropped as lookups go on.
        let budget = 2 * probe.index_bytes() + 64 * 1024;
        let mut s = Symbolizer::with_options(Symbolization::full().memory_budget(budget));
        for &a in &addrs {
            let sym = s.symbolize(a);
            assert!(!sym.frames.is_empty());
            let f = s.footprint();
            assert!(f.bytes <= budget as u64, "{f:?} over {budget}");
        }
        let f = s.footprint();
        assert!(f.units_evicted > 0 || f.cache_flushes > 0, "{f:?}");
        // Names stay right after evictions (parsed again on demand).
        let again = s.symbolize(leaf_function_for_symbolizer_test as *const () as usize);
        assert!(again
            .frames
            .last()
            .unwrap()
            .name
            .ends_with("leaf_function_for_symbolizer_test"));
        assert!(again.frames.last().unwrap().line > 0);
    }

    #[test]
    fn a_window_prepared_in_address_order_parses_fewer_units_and_names_the_same() {
        // The order samples bring addresses in: each unit's addresses (four close
        // together around each base) come back after a round over all the others.
        let bases = some_code_addresses();
        let addrs: Vec<usize> = (0..4)
            .flat_map(|k| bases.iter().map(move |&a| a + 16 * k))
            .collect();
        let mut probe = Symbolizer::new();
        probe.symbolize(addrs[0]);
        let budget = 2 * probe.index_bytes() + 512 * 1024;
        let run = |prepare: bool| {
            let mut s = Symbolizer::with_options(Symbolization::full().memory_budget(budget));
            if prepare {
                s.prepare(addrs.iter().copied());
            }
            let names: Vec<Vec<String>> = addrs
                .iter()
                .map(|&a| {
                    s.symbolize(a)
                        .frames
                        .iter()
                        .map(|f| format!("{} {}:{}", f.name, f.file, f.line))
                        .collect()
                })
                .collect();
            (names, s.footprint())
        };
        let (plain, plain_footprint) = run(false);
        let (prepared, prepared_footprint) = run(true);
        assert_eq!(plain, prepared);
        assert_eq!(
            prepared_footprint.cache_flushes, 0,
            "{prepared_footprint:?}"
        );
        assert!(
            prepared_footprint.units_parsed < plain_footprint.units_parsed,
            "prepared {prepared_footprint:?} / plain {plain_footprint:?}"
        );
    }

    #[test]
    fn a_budget_below_the_indexes_gives_symbol_table_names_only_and_counts_them() {
        let mut s = Symbolizer::with_options(Symbolization::full().memory_budget(1));
        let sym = s.symbolize(leaf_function_for_symbolizer_test as *const () as usize);
        let f = sym.frames.last().unwrap();
        assert!(
            f.name.ends_with("leaf_function_for_symbolizer_test"),
            "{f:?}"
        );
        assert_eq!((f.line, &*f.file), (0, ""));
        assert!(s.footprint().symbol_only >= 1);
    }

    #[test]
    fn functions_only_names_from_the_symbol_table_and_reads_no_debug_info() {
        let mut s = Symbolizer::with_options(Symbolization::functions_only());
        let (frames, _, _) = caller_of_inlined_helper();
        let sym = s.symbolize(frames[0] - 1);
        assert_eq!(sym.frames.len(), 1, "no inlined frames: {:?}", sym.frames);
        let f = &sym.frames[0];
        assert!(f.name.ends_with("tests::caller_of_inlined_helper"), "{f:?}");
        assert_eq!((f.line, &*f.file, f.start_line), (0, "", 0));
        assert_eq!(s.footprint().units_parsed, 0);
        let info = s.mapping_info(0);
        assert!(info.has_functions && !info.has_filenames && !info.has_inline_frames);
    }
}
