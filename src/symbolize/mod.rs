//! Symbolization: addresses of a closed window become functions, files and lines (with
//! inlined frames), read from the loaded modules' files on the writer thread, within a
//! memory budget.

/// Per-unit DWARF: line rows and inlined calls, parsed on demand.
pub(crate) mod dwarf;
/// A read-only memory map of a file.
pub(crate) mod mapped;
/// Readable names: demangling, generics removed, module paths from source files.
pub(crate) mod names;
/// One mapped object file: build id, symbol index, DWARF sections.
pub(crate) mod objfile;
/// `Symbolization`: the public options (detail, memory budget).
pub(crate) mod symbolization;
/// `Symbolizer`: addresses to frames, cached, within the budget.
pub(crate) mod symbolizer;

pub(crate) use symbolizer::{lookup_address, lookup_addresses, Symbolizer};

use crate::counters::Counter;

/// Tallies of what symbolization did, for `stats()`.
#[derive(Debug)]
pub(crate) struct SymbolizeCounters {
    /// Distinct addresses symbolized (cache misses of the symbolizer).
    pub(crate) addresses_symbolized: Counter,
    /// Of those, addresses for which no function name was found (encoded with a hex name).
    pub(crate) addresses_unresolved: Counter,
}

/// The process-wide symbolization tallies.
pub(crate) static SYMBOLIZE: SymbolizeCounters = SymbolizeCounters {
    addresses_symbolized: Counter::new(),
    addresses_unresolved: Counter::new(),
};
