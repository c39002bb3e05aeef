//! Internals reachable from integration tests and loom models. Not a public API.

pub use crate::labels::registry::{LabelHandle, Registry, RegistryLen};
pub use crate::labels::set::LabelSet;
pub use crate::sampler::buffer::{Record as SampleRecord, SampleBuffer, MAX_FRAMES};
pub use crate::sampler::{
    in_handler as in_sampler_handler, set_in_handler as set_in_sampler_handler, DrainedSample,
    Sampler, SamplerConfig, SamplerStats, DEFAULT_SAMPLE_RATE_HZ, MAX_SAMPLE_RATE_HZ,
};
pub use crate::tokio_hooks::state::{
    hook_counters, HookCountersSnapshot, LabelSlot, PollFrames, TaskTable, ThreadSlot,
    DEFAULT_SHARDS as HOOK_SHARDS, SPAWNED_AT_KEY,
};

/// The symbolizer on its own, for the `symbolize` bench.
pub mod symbolize {
    use crate::symbolize::symbolizer::Symbolizer;
    use crate::Symbolization;

    /// Up to `n` distinct addresses inside functions of the main program, spread over it.
    pub fn code_addresses(n: usize) -> Vec<usize> {
        Symbolizer::new().main_program_addresses(n)
    }

    /// Symbolizes `addrs` with a new symbolizer (cold: files mapped and indexed, units
    /// parsed as needed); returns the frames found and the symbolizer's heap bytes.
    pub fn symbolize_cold(addrs: &[usize], symbolization: Symbolization) -> (usize, u64) {
        let mut s = Symbolizer::with_options(symbolization);
        // As the encoders do: the window's cold addresses in address order first.
        s.prepare(addrs.iter().copied());
        let frames = addrs.iter().map(|&a| s.symbolize(a).frames.len()).sum();
        (frames, s.footprint().bytes)
    }

    /// Symbolizes `addrs` with a new symbolizer as [`symbolize_cold`] does, then calls
    /// `inspect` with the symbolizer's stats while it is still alive (so that a test's
    /// counting allocator can compare its bytes with what it really holds).
    pub fn inspect_cold<R>(
        addrs: &[usize],
        symbolization: Symbolization,
        inspect: impl FnOnce(crate::SymbolizerStats) -> R,
    ) -> R {
        let mut s = Symbolizer::with_options(symbolization);
        s.prepare(addrs.iter().copied());
        for &a in addrs {
            drop(s.symbolize(a));
        }
        s.end_window();
        inspect(s.footprint().into())
    }
}

/// The label id in force on this thread (what the signal handler would read).
pub fn current_label_id() -> u64 {
    crate::sampler::slot::current()
}

/// The label id a wrapper applies (0 for none).
pub fn label_id_of<F>(profiled: &crate::Profiled<F>) -> u64 {
    profiled.label_id()
}

/// Sizes of the global registry (live and retired entries).
pub fn global_registry_len() -> RegistryLen {
    Registry::global().len()
}

/// Number of live entries in the OpenTelemetry span-id map.
#[cfg(feature = "otel")]
pub fn otel_span_map_len() -> usize {
    crate::otel::span_map_len()
}

/// Lookups of a valid span that no live `ProfilingSpan` has (gave no labels).
#[cfg(feature = "otel")]
pub fn otel_unknown_spans() -> u64 {
    crate::otel::OTEL.unknown_spans.get()
}

/// Spans built under a local parent that no live `ProfilingSpan` has.
#[cfg(feature = "otel")]
pub fn otel_unknown_parents() -> u64 {
    crate::otel::OTEL.unknown_parents.get()
}

/// The span id and span name of a resolved label set (its fields are crate-private).
pub fn span_of(set: &LabelSet) -> (Option<u64>, Option<&str>) {
    (set.span_id, set.span_name.as_deref())
}

/// pprof for tests, the loopback upload receiver and the flame-graph renderer: the
/// `profile.proto` messages, `decode`, `validate` (every rule of ARCHITECTURE.md "Server
/// validation"), `samples` (a readable listing), and `encode_window` (aggregate and
/// encode synthetic or captured stacks through the real collector code).
pub mod pprof {
    pub use crate::pprof::validate::*;

    use std::time::SystemTime;

    /// One raw sample for [`encode_window`]: frames (leaf PC first, then return
    /// addresses), label id (0: none), weight.
    pub type WindowSample = (Vec<usize>, u64, u64);

    /// A window encoded by [`encode_window`].
    #[derive(Debug, Clone)]
    pub struct EncodedWindow {
        /// The gzipped pieces, each a complete profile.
        pub pieces: Vec<Vec<u8>>,
        /// Uncompressed size of each piece.
        pub uncompressed_lens: Vec<usize>,
        /// Samples per piece.
        pub samples: Vec<usize>,
        /// Total weight the window held before encoding.
        pub total_weight: u64,
        /// Samples the window aggregated (calls that had frames and weight).
        pub samples_added: u64,
    }

    /// Aggregates `samples` into one window `[start, end]` with the default caps and
    /// encodes it with a fresh symbolizer.
    pub fn encode_window(
        samples: &[WindowSample],
        start: SystemTime,
        end: SystemTime,
        sample_rate_hz: u32,
        max_piece_bytes: Option<usize>,
        max_piece_samples: Option<usize>,
    ) -> EncodedWindow {
        let opts = EncodeWindowOptions {
            sample_rate_hz,
            max_piece_bytes,
            max_piece_samples,
        };
        PreparedWindow::new(samples, start, end, opts).encode()
    }

    /// Options of [`PreparedWindow`].
    #[derive(Debug, Clone, Copy)]
    pub struct EncodeWindowOptions {
        /// Sampling rate in Hz (period = 1e9 / rate).
        pub sample_rate_hz: u32,
        /// Largest uncompressed piece in bytes.
        pub max_piece_bytes: Option<usize>,
        /// Most samples per piece.
        pub max_piece_samples: Option<usize>,
    }

    /// A closed window and a symbolizer kept together, so that encoding can be repeated
    /// (benchmarks measure `encode` with a warm symbolizer cache).
    pub struct PreparedWindow {
        window: crate::window::ClosedWindow,
        symbolizer: crate::symbolize::Symbolizer,
        opts: crate::pprof::encode::EncodeOptions,
        samples_added: u64,
    }

    impl PreparedWindow {
        /// Aggregates `samples` into one window `[start, end]` with the default caps.
        pub fn new(
            samples: &[WindowSample],
            start: SystemTime,
            end: SystemTime,
            opts: EncodeWindowOptions,
        ) -> Self {
            use crate::pprof::encode::EncodeOptions;
            use crate::window::{WindowAggregator, WindowLimits};
            // Its own counters: what this window dropped, whatever else runs.
            let counters = Box::leak(Box::new(crate::window::WindowCounters::new()));
            let mut window =
                WindowAggregator::counting_into(WindowLimits::default(), start, counters);
            for (frames, label_id, weight) in samples {
                window.add(frames, *label_id, *weight);
            }
            Self {
                samples_added: samples.len() as u64 - counters.samples_empty.get(),
                window: window.close(end),
                symbolizer: crate::symbolize::Symbolizer::new(),
                opts: EncodeOptions {
                    max_piece_bytes: opts.max_piece_bytes,
                    max_piece_samples: opts.max_piece_samples,
                    ..EncodeOptions::for_rate(opts.sample_rate_hz)
                },
            }
        }

        /// Encodes (symbolizes, builds and gzips every piece).
        pub fn encode(&mut self) -> EncodedWindow {
            let mut out = EncodedWindow {
                pieces: Vec::new(),
                uncompressed_lens: Vec::new(),
                samples: Vec::new(),
                total_weight: self.window.total_weight(),
                samples_added: self.samples_added,
            };
            for piece in
                crate::pprof::encode::encode(&self.window, &mut self.symbolizer, &self.opts)
            {
                out.pieces.push(piece.gzipped);
                out.uncompressed_lens.push(piece.uncompressed_len);
                out.samples.push(piece.samples);
            }
            out
        }

        /// Encodes the window as OTLP requests (uncompressed `ExportProfilesServiceRequest`
        /// bodies) with the resource of `application_name` and `tags`, cut like the
        /// uploader cuts them (`max_piece_bytes`, default 1 MiB; `max_piece_samples`,
        /// default 16,000).
        #[cfg(feature = "upload")]
        pub fn encode_otlp(
            &mut self,
            application_name: &str,
            tags: &[(String, String)],
        ) -> Vec<Vec<u8>> {
            let settings = crate::otlp::OtlpSettings::default();
            let resource = crate::otlp::resource(application_name, &settings, tags);
            let opts = crate::otlp::encode::EncodeOptions {
                period_ns: self.opts.period_ns,
                max_bytes: self.opts.max_piece_bytes.unwrap_or(1024 * 1024),
                max_samples: self.opts.max_piece_samples.unwrap_or(16_000),
            };
            crate::otlp::encode::encode(&self.window, &mut self.symbolizer, &opts, &resource)
        }
    }
}

/// The uploader, for the upload tests (`tests/upload_*.rs`).
#[cfg(feature = "upload")]
pub mod upload {
    pub use crate::sink::upload::request::{LabelPair, PushRequest, RawProfileSeries, RawSample};
    pub use crate::sink::upload::{
        Protocol, SeriesKind, UploadConfig, UploadCounts, UploadDropped, UploadReport,
        UploadWindow, Uploader,
    };

    /// The upload configuration `start()` would use: the builder's real validation.
    pub fn config(builder: crate::ProfilerBuilder) -> Result<UploadConfig, crate::BuildError> {
        let config = builder.validate()?;
        config.upload.ok_or(crate::BuildError::InvalidOption {
            option: "server_address",
            reason: "not set".into(),
        })
    }
}
