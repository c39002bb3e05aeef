//! cfg helpers: one name for a condition that many items repeat.

/// Items compiled only where the sampler can run: Linux on x86_64 or aarch64, outside the
/// loom models (which replace the atomics the handler relies on).
macro_rules! cfg_sampler {
    ($($item:item)*) => {
        $(
            #[cfg(all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64"),
                not(span_profiler_loom)
            ))]
            $item
        )*
    };
}

/// Items compiled where the sampler cannot run (the complement of [`cfg_sampler!`]).
macro_rules! cfg_no_sampler {
    ($($item:item)*) => {
        $(
            #[cfg(not(all(
                target_os = "linux",
                any(target_arch = "x86_64", target_arch = "aarch64"),
                not(span_profiler_loom)
            )))]
            $item
        )*
    };
}
