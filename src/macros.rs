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

/// Items that only the crate's own tests use: unit tests (`cfg(test)`) and, through
/// `__private`, the integration tests, benches, `loom-tests` and `peer-benches` (the hidden
/// `__internal` feature). A plain build of the library does not compile them.
macro_rules! cfg_internal {
    ($($item:item)*) => {
        $(
            #[cfg(any(test, feature = "__internal"))]
            $item
        )*
    };
}

/// Items of the `task-metrics` feature, labelled as such in the documentation.
macro_rules! cfg_task_metrics {
    ($($item:item)*) => {
        $(
            #[cfg(feature = "task-metrics")]
            #[cfg_attr(docsrs, doc(cfg(feature = "task-metrics")))]
            $item
        )*
    };
}
