use std::time::Duration;

use prost::Message;

use super::*;
use crate::pprof::proto;

/// Builds small profiles by hand: `sample(&["leaf", "caller", "main"], labels, cpu_ns)`.
struct Builder {
    p: proto::Profile,
}

impl Builder {
    fn cpu() -> Self {
        let mut b = Self {
            p: proto::Profile::default(),
        };
        b.p.string_table.push(String::new());
        let types = [("samples", "count"), ("cpu", "nanoseconds")];
        for (ty, unit) in types {
            let vt = proto::ValueType {
                r#type: b.s(ty),
                unit: b.s(unit),
            };
            b.p.sample_type.push(vt);
        }
        b
    }

    fn s(&mut self, text: &str) -> i64 {
        if let Some(i) = self.p.string_table.iter().position(|t| t == text) {
            return i as i64;
        }
        self.p.string_table.push(text.into());
        self.p.string_table.len() as i64 - 1
    }

    /// A location with one line per name (inlined callee first).
    fn location(&mut self, names: &[&str]) -> u64 {
        let id = self.p.location.len() as u64 + 1;
        let mut lines = Vec::new();
        for name in names {
            let fid = self.p.function.len() as u64 + 1;
            let n = self.s(name);
            self.p.function.push(proto::Function {
                id: fid,
                name: n,
                system_name: n,
                ..Default::default()
            });
            lines.push(proto::Line {
                function_id: fid,
                line: 1,
                column: 0,
            });
        }
        self.p.location.push(proto::Location {
            id,
            line: lines,
            ..Default::default()
        });
        id
    }

    /// A sample: one location per frame (leaf first), labels, CPU nanoseconds.
    fn sample(&mut self, frames: &[&str], labels: &[(&str, &str)], cpu: i64) -> &mut Self {
        let location_id = frames.iter().map(|f| self.location(&[f])).collect();
        self.sample_at(location_id, labels, cpu)
    }

    fn sample_at(&mut self, location_id: Vec<u64>, labels: &[(&str, &str)], cpu: i64) -> &mut Self {
        let label = labels
            .iter()
            .map(|(k, v)| proto::Label {
                key: self.s(k),
                str: self.s(v),
                num: 0,
                num_unit: 0,
            })
            .collect();
        self.p.sample.push(proto::Sample {
            location_id,
            value: vec![cpu / 10_000_000, cpu],
            label,
        });
        self
    }

    fn bytes(&self) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&self.p.encode_to_vec()).unwrap();
        gz.finish().unwrap()
    }

    fn profile(&self) -> Profile {
        Profile::from_bytes(&self.bytes()).unwrap()
    }
}

const A: &str = "00000000000000aa";
const B: &str = "00000000000000bb";
const C: &str = "00000000000000cc";

/// Two requests of `GET /search`, one of `POST /checkout`, one unlabelled sample.
fn shop() -> Profile {
    let mut b = Builder::cpu();
    let search_a = [("span_id", A), ("span_name", "GET /search")];
    let search_b = [("span_id", B), ("span_name", "GET /search")];
    let checkout = [("span_id", C), ("span_name", "POST /checkout")];
    b.sample(
        &["core::hint::black_box", "shop::search_index", "main"],
        &search_a,
        300_000_000,
    )
    .sample(&["shop::search_index", "main"], &search_b, 200_000_000)
    .sample(&["shop::tokenize", "main"], &search_b, 100_000_000)
    .sample(
        &[
            "<u64 as core::iter::range::Step>::forward",
            "shop::checkout_total",
            "main",
        ],
        &checkout,
        400_000_000,
    )
    .sample(&["tokio::runtime::park", "main"], &[], 50_000_000);
    b.profile()
}

fn draw(graph: FlameGraph, profiles: &[Profile]) -> (String, Rendered) {
    let mut out = Vec::new();
    let rendered = graph.render(profiles, &mut out).unwrap();
    (String::from_utf8(out).unwrap(), rendered)
}

#[test]
fn the_whole_profile_renders_with_every_function_and_the_cpu_total() {
    let (svg, rendered) = draw(FlameGraph::new().title("shop"), &[shop()]);
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    for f in [
        "shop::search_index",
        "shop::checkout_total",
        "shop::tokenize",
        "tokio::runtime::park",
        "main",
    ] {
        assert!(svg.contains(f), "{f} missing");
    }
    assert!(svg.contains("shop"));
    assert_eq!(rendered.samples, 5);
    assert_eq!(rendered.cpu, Some(Duration::from_millis(1050)));
    assert!(
        svg.contains("1.050 s of CPU"),
        "the subtitle states the total"
    );
}

#[test]
fn a_span_name_filter_draws_only_that_routes_samples() {
    let (svg, rendered) = draw(
        FlameGraph::new().filter(SampleFilter::span_name("GET /search")),
        &[shop()],
    );
    assert!(svg.contains("shop::search_index") && svg.contains("shop::tokenize"));
    assert!(!svg.contains("checkout_total") && !svg.contains("tokio::runtime::park"));
    assert_eq!(rendered.cpu, Some(Duration::from_millis(600)));
}

#[test]
fn a_span_id_filter_draws_only_that_request() {
    let filter = SampleFilter::span_id_hex(B).unwrap();
    assert_eq!(filter, SampleFilter::span_id(0xbb));
    let (svg, rendered) = draw(FlameGraph::new().filter(filter), &[shop()]);
    assert!(svg.contains("shop::tokenize"));
    assert!(
        !svg.contains("black_box"),
        "request A's frames are not drawn"
    );
    assert_eq!(rendered.samples, 2);
    assert_eq!(rendered.cpu, Some(Duration::from_millis(300)));
}

#[test]
fn a_filter_that_matches_nothing_is_an_error_that_names_the_filter() {
    let err = FlameGraph::new()
        .filter(SampleFilter::span_name("GET /nope"))
        .render(&[shop()], Vec::new())
        .unwrap_err();
    assert!(matches!(err, FlamegraphError::NoSamples { .. }));
    assert!(err.to_string().contains("span_name `GET /nope`"), "{err}");
    let err = FlameGraph::new().render(&[], Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("no samples match all samples"),
        "{err}"
    );
}

#[test]
fn the_summary_counts_requests_cpu_and_the_hottest_non_std_function() {
    let summary = summarize(&[shop(), shop()]).unwrap();
    assert_eq!(summary.total_cpu, Duration::from_millis(2100));
    assert_eq!(summary.unlabelled_cpu, Duration::from_millis(100));
    let names: Vec<&str> = summary.spans.iter().map(|s| s.span_name.as_str()).collect();
    assert_eq!(names, ["GET /search", "POST /checkout"], "most CPU first");
    let search = &summary.spans[0];
    assert_eq!(
        search.requests, 2,
        "the same span ids in two files count once"
    );
    assert_eq!(search.cpu, Duration::from_millis(1200));
    assert_eq!(search.cpu_per_request(), Some(Duration::from_millis(600)));
    // black_box is std: its CPU goes to the caller.
    assert_eq!(
        search.hottest_function.as_deref(),
        Some("shop::search_index")
    );
    assert_eq!(search.hottest_function_cpu, Duration::from_millis(1000));
    let checkout = &summary.spans[1];
    assert_eq!(
        checkout.hottest_function.as_deref(),
        Some("shop::checkout_total")
    );

    let ids: Vec<(u64, u64)> = summary
        .requests
        .iter()
        .map(|r| (r.span_id, r.cpu.as_millis() as u64))
        .collect();
    assert_eq!(ids, [(0xcc, 800), (0xaa, 600), (0xbb, 600)]);
    assert_eq!(
        summary.requests[0].span_name.as_deref(),
        Some("POST /checkout")
    );
}

#[test]
fn std_frames_are_recognised_and_application_frames_are_not() {
    for std in [
        "core::hint::black_box",
        "std::thread::sleep",
        "alloc::vec::Vec<T>::push",
        "<core::ops::range::Range<u64> as core::iter::traits::iterator::Iterator>::next",
        "<u64 as core::iter::range::Step>::forward_unchecked",
        "<[u8] as core::fmt::Debug>::fmt",
        "<&mut str as core::fmt::Display>::fmt",
        "compiler_builtins::mem::memcpy",
    ] {
        assert!(is_std_frame(std), "{std}");
    }
    for app in [
        "shop::search_index",
        "<shop::Cart as core::ops::Drop>::drop",
        "tokio::runtime::park",
        "__memmove_avx_unaligned_erms",
        "[libc.so.6+0x1234]",
        "demo::burn::{{closure}}",
    ] {
        assert!(!is_std_frame(app), "{app}");
    }
}

#[test]
fn std_functions_named_without_their_path_are_recognised_by_their_source_file() {
    // Release builds with `debug = "line-tables-only"`: inlined std frames have short
    // names, but their files are under `library/core`.
    let mut b = Builder::cpu();
    let rotate = b.location(&["rotate_left<u64>"]);
    let file = b.s("/rustc/0123abcd/library/core/src/num/uint_macros.rs");
    b.p.function.last_mut().unwrap().filename = file;
    let burn = b.location(&["burn_cpu"]);
    b.sample_at(vec![rotate, burn], &[("span_name", "GET /")], 10_000_000);
    let summary = summarize(&[b.profile()]).unwrap();
    assert_eq!(
        summary.spans[0].hottest_function.as_deref(),
        Some("burn_cpu")
    );
}

#[test]
fn inlined_and_unsymbolized_frames_are_drawn_and_semicolons_kept_apart() {
    let mut b = Builder::cpu();
    let inlined = b.location(&["app::inner_inlined", "app::outer"]);
    let file = b.s("/usr/lib/libc.so.6");
    b.p.mapping.push(proto::Mapping {
        id: 1,
        memory_start: 0x1000,
        memory_limit: 0x9000,
        file_offset: 0x200,
        filename: file,
        ..Default::default()
    });
    b.p.location.push(proto::Location {
        id: 99,
        mapping_id: 1,
        address: 0x1234,
        ..Default::default()
    });
    let array = b.location(&["<[u8; 4] as app::Hash>::hash"]);
    b.sample_at(vec![99, inlined, array], &[], 10_000_000);
    let (svg, _) = draw(FlameGraph::new(), &[b.profile()]);
    assert!(
        svg.contains("[libc.so.6+0x434]"),
        "unsymbolized frame named by its mapping"
    );
    assert!(svg.contains("app::inner_inlined") && svg.contains("app::outer"));
    assert!(
        svg.contains("[u8； 4]"),
        "`;` is not a frame separator inside a name"
    );
}

#[test]
fn bad_input_gives_errors_never_panics() {
    let err = Profile::from_bytes(b"not a profile at all").unwrap_err();
    assert!(matches!(err, FlamegraphError::Decode { .. }), "{err}");
    assert!(err.to_string().contains("is not a pprof profile"), "{err}");
    assert!(
        std::error::Error::source(&err).is_some_and(|s| s.source().is_some()),
        "the protobuf decoder's error is kept as a source: {err:?}"
    );
    let err = Profile::from_bytes(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
    assert!(err.to_string().contains("gzip"), "{err}");
    let err = Profile::read("/nonexistent/span-profiler.pb.gz").unwrap_err();
    assert!(
        err.to_string().contains("cannot read `/nonexistent"),
        "{err}"
    );
    let err = SampleFilter::span_id_hex("xyz").unwrap_err();
    assert!(err.to_string().contains("16 hex digits"), "{err}");

    // Dangling ids and string indices: drawn as `?`, not a panic.
    let mut b = Builder::cpu();
    b.sample(&["app::f"], &[("span_name", "GET /")], 10_000_000);
    b.p.function[0].name = 999;
    b.p.function[0].system_name = 999;
    b.p.sample[0].location_id.push(4242);
    b.p.sample[0].label[0].str = -7;
    let profile = Profile {
        inner: b.p.clone(),
        origin: "hand-made".into(),
    };
    let (svg, _) = draw(FlameGraph::new(), std::slice::from_ref(&profile));
    assert!(svg.contains('?'));
    let summary = summarize(&[profile]).unwrap();
    assert_eq!(summary.spans[0].span_name, "?");

    // No `cpu/nanoseconds`: the summary refuses, the renderer uses the last type.
    let mut b = Builder::cpu();
    b.sample(&["app::alloc"], &[], 10_000_000);
    let bytes_index = b.s("bytes");
    b.p.sample_type[1].r#type = bytes_index;
    let err = summarize(&[b.profile()]).unwrap_err();
    assert!(err.to_string().contains("no `cpu/nanoseconds`"), "{err}");
    let (svg, rendered) = draw(FlameGraph::new(), &[b.profile()]);
    assert!(svg.contains("app::alloc"));
    assert_eq!(rendered.cpu, None);
    let err = FlameGraph::new()
        .render(&[b.profile(), shop()], Vec::new())
        .unwrap_err();
    assert!(
        matches!(err, FlamegraphError::MixedSampleTypes { .. }),
        "{err}"
    );
}

#[test]
fn files_are_read_alone_or_by_directory_and_written_as_svg() {
    let dir = std::env::temp_dir().join(format!("span-profiler-flamegraph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut b = Builder::cpu();
    b.sample(&["app::f"], &[], 10_000_000);
    std::fs::write(dir.join("a-1.pb.gz"), b.bytes()).unwrap();
    std::fs::write(dir.join("b-2.pb"), b.p.encode_to_vec()).unwrap();
    std::fs::write(dir.join(".c-3.pb.gz.tmp"), b"partial").unwrap();
    std::fs::write(dir.join("notes.txt"), b"ignored").unwrap();
    let profiles = Profile::read_dir(&dir).unwrap();
    assert_eq!(profiles.len(), 2);
    assert!(profiles[0].origin().ends_with("a-1.pb.gz"));
    assert_eq!(profiles[1].sample_count(), 1);

    let out = dir.join("all.svg");
    let rendered = FlameGraph::new().render_to_file(&profiles, &out).unwrap();
    assert_eq!(rendered.cpu, Some(Duration::from_millis(20)));
    assert!(std::fs::read_to_string(&out).unwrap().contains("app::f"));

    std::fs::write(dir.join("broken.pb.gz"), b"\x1f\x8bjunk").unwrap();
    let err = Profile::read_dir(&dir).unwrap_err();
    assert!(err.to_string().contains("broken.pb.gz"), "{err}");
    let err = FlameGraph::new()
        .render_to_file(&profiles, dir.join("no-such-dir/x.svg"))
        .unwrap_err();
    assert!(
        err.to_string().contains("cannot write flame graph"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An allocation profile: Go's heap sample types, values `[objects, bytes, 0, 0]`.
fn heap() -> Profile {
    let mut b = Builder {
        p: proto::Profile::default(),
    };
    b.p.string_table.push(String::new());
    for (ty, unit) in [
        ("alloc_objects", "count"),
        ("alloc_space", "bytes"),
        ("inuse_objects", "count"),
        ("inuse_space", "bytes"),
    ] {
        let vt = proto::ValueType {
            r#type: b.s(ty),
            unit: b.s(unit),
        };
        b.p.sample_type.push(vt);
    }
    let mut add = |frames: &[&str], labels: &[(&str, &str)], objects: i64, bytes: i64| {
        b.sample(frames, labels, 0);
        let last = b.p.sample.last_mut().unwrap();
        last.value = vec![objects, bytes, 0, 0];
    };
    let search_a = [("span_id", A), ("span_name", "GET /search")];
    let search_b = [("span_id", B), ("span_name", "GET /search")];
    let checkout = [("span_id", C), ("span_name", "POST /checkout")];
    add(
        &[
            "<span_profiler::alloc::ProfiledAllocator as core::alloc::global::GlobalAlloc>::alloc",
            "__rustc::__rust_alloc",
            "alloc::raw_vec::RawVec::allocate_in",
            "shop::build_results",
            "main",
        ],
        &search_a,
        3,
        3 << 20,
    );
    add(&["shop::build_results", "main"], &search_b, 1, 1 << 20);
    add(&["shop::tokenize", "main"], &search_b, 10, 1 << 10);
    add(&["shop::cart", "main"], &checkout, 2, 8 << 10);
    add(&["tokio::runtime::park", "main"], &[], 1, 512);
    b.profile()
}

#[test]
fn allocations_are_summed_per_span_name_with_the_function_that_allocated_most() {
    let summary = summarize_allocations(&[heap()]).unwrap();
    assert_eq!(summary.total_bytes, (4 << 20) + (1 << 10) + (8 << 10) + 512);
    assert_eq!(summary.unlabelled_bytes, 512);
    let names: Vec<&str> = summary.spans.iter().map(|s| s.span_name.as_str()).collect();
    assert_eq!(names, ["GET /search", "POST /checkout"], "most bytes first");
    let search = &summary.spans[0];
    assert_eq!(search.bytes, (4 << 20) + (1 << 10));
    assert_eq!(search.objects, 14);
    assert_eq!(search.requests, 2);
    // Not the allocator wrapper, std's shims or `alloc::`: the application's function.
    assert_eq!(search.top_allocator.as_deref(), Some("shop::build_results"));
    // CPU profiles have no `alloc_space`: an error naming the sample type.
    let err = summarize_allocations(&[shop()]).unwrap_err();
    assert!(
        matches!(&err, FlamegraphError::NoSampleType { sample_type, .. } if sample_type == "alloc_space"),
        "{err}"
    );
}

#[test]
fn a_chosen_sample_type_is_drawn_instead_of_the_last_one() {
    let (svg, rendered) = draw(
        FlameGraph::new()
            .sample_type("alloc_space")
            .filter(SampleFilter::span_name("GET /search")),
        &[heap()],
    );
    assert!(svg.contains("alloc_space (bytes)"), "the unit is named");
    assert!(svg.contains("shop::build_results") && !svg.contains("shop::cart"));
    assert_eq!(rendered.cpu, None);
    // Without a choice the last type (`inuse_space`) is drawn: all zero here.
    assert!(matches!(
        FlameGraph::new().render(&[heap()], Vec::new()),
        Err(FlamegraphError::NoSamples { .. })
    ));
    assert!(matches!(
        FlameGraph::new()
            .sample_type("alloc_space")
            .render(&[shop()], Vec::new()),
        Err(FlamegraphError::NoSampleType { .. })
    ));
}
