//! Loom models of span-profiler internals; see `tests/`. Built only with `--cfg span_profiler_loom`.
