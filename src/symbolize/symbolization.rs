//! [`Symbolization`]: how much the profiler finds out about each address, and how much
//! memory it may keep for that.

/// Default memory budget of the symbolizer, in bytes (8 MiB): its symbol index, the
/// debug-info units it keeps parsed and its cache of resolved addresses together.
pub const DEFAULT_SYMBOLIZER_BUDGET: usize = 8 * 1024 * 1024;

/// Smallest memory budget accepted, in bytes (1 MiB).
pub const MIN_SYMBOLIZER_BUDGET: usize = 1024 * 1024;

/// What the profile says about each sampled address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SymbolDetail {
    /// Function names, inlined functions as their own frames, source files and lines
    /// (from DWARF; build with at least `debug = "line-tables-only"`).
    Full,
    /// Function names from the symbol table only: no inlined frames, files or lines, and
    /// no debug info read at all.
    FunctionsOnly,
}

/// How addresses become names, files and lines, and the memory that may take; set with
/// [`ProfilerBuilder::symbolize`](crate::ProfilerBuilder::symbolize).
///
/// Object files are mapped, not read: their pages are shared with the page cache and
/// given back after each window. Heap memory is the budget's: a compact index of each
/// module's function symbols and debug-info units, the units parsed for addresses seen
/// (parsed on first use, one compilation unit at a time), and a cache of resolved
/// addresses. Over the budget, parsed units are dropped (least recently used first) and
/// parsed again when needed, then the address cache is emptied; the indexes may take at
/// most half of it: beyond that, the module with the largest debug-info index (often a
/// system library's compressed debug file, decompressed) loses its debug info and its
/// addresses are named from the symbol table only. Each of these steps is
/// counted in [`Stats::symbolizer`](crate::Stats::symbolizer). A single unit being parsed
/// may pass the budget for the duration of that lookup. Whatever the budget, cached
/// addresses and parsed units that no lookup used for a minute are dropped when a window
/// ends, so a long-running process keeps what recent windows needed.
///
/// ```
/// use span_profiler::{Profiler, Symbolization};
///
/// // The default: everything, within 8 MiB.
/// let builder = Profiler::builder().symbolize(Symbolization::full());
/// // Function names only, no debug info read: the smallest footprint.
/// let builder = Profiler::builder().symbolize(Symbolization::functions_only());
/// // Everything, within 4 MiB.
/// let builder = Profiler::builder().symbolize(Symbolization::full().memory_budget(4 << 20));
/// # let _ = builder;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Symbolization {
    detail: SymbolDetail,
    budget: usize,
}

impl Symbolization {
    /// Function names, inlined frames, files and lines, within
    /// [`DEFAULT_SYMBOLIZER_BUDGET`] (the default).
    pub const fn full() -> Self {
        Self {
            detail: SymbolDetail::Full,
            budget: DEFAULT_SYMBOLIZER_BUDGET,
        }
    }

    /// Function names from the symbol table only, within [`DEFAULT_SYMBOLIZER_BUDGET`].
    pub const fn functions_only() -> Self {
        Self {
            detail: SymbolDetail::FunctionsOnly,
            budget: DEFAULT_SYMBOLIZER_BUDGET,
        }
    }

    /// The heap memory the symbolizer may keep, in bytes; at least
    /// [`MIN_SYMBOLIZER_BUDGET`] (`start()` refuses less).
    pub const fn memory_budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// The detail chosen.
    pub const fn detail(&self) -> SymbolDetail {
        self.detail
    }

    /// The memory budget in bytes.
    pub const fn budget(&self) -> usize {
        self.budget
    }
}

impl Default for Symbolization {
    fn default() -> Self {
        Self::full()
    }
}
