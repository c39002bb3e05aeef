//! Symbolization: addresses of a closed window become functions, files and lines (with
//! inlined frames), read from the loaded modules' files on the writer thread.

pub(crate) mod symbolizer;

pub(crate) use symbolizer::Symbolizer;

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
