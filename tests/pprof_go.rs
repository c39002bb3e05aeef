//! The encoder's output read by an independent decoder: `go tool pprof` (Debian `golang-go`).
//!
//! Stacks are made of real addresses inside this test binary's functions (leaf PCs and
//! return addresses into callers), labelled through the public `Labels` API, aggregated
//! and encoded by the crate's collector code, written to a file, then read with
//! `go tool pprof -raw` and `-tagfocus=span_id=<id>`.
//!
//! Without `go` on the PATH the tests print a skip message, unless
//! `SPAN_PROFILER_REQUIRE_TOOLS=1`, when they fail.

mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};
use tools::go;

use span_profiler::__private::label_id_of;
use span_profiler::__private::pprof::{decode, encode_window, samples, validate};
use span_profiler::{Labels, ProfiledExt};

const SPAN_A: u64 = 0x00f0_67aa_0ba9_02b7;
const SPAN_B: u64 = 0x1234_5678_9abc_def0;

#[inline(never)]
fn checkout_leaf_work(n: u64) -> u64 {
    let mut acc = 0u64;
    for i in 0..n {
        acc = std::hint::black_box(acc.wrapping_mul(31).wrapping_add(i));
    }
    acc
}

#[inline(never)]
fn checkout_handler(n: u64) -> u64 {
    std::hint::black_box(checkout_leaf_work(n)) + 1
}

#[inline(never)]
fn search_leaf_work(n: u64) -> u64 {
    let mut acc = 1u64;
    for i in 0..n {
        acc = std::hint::black_box(acc.wrapping_add(i).rotate_left(3));
    }
    acc
}

#[inline(never)]
fn search_handler(n: u64) -> u64 {
    std::hint::black_box(search_leaf_work(n)) + 2
}

/// A leaf PC a few bytes into `leaf`, and a "return address" a few bytes into `caller`
/// (the encoder looks callers up at return address - 1, still inside `caller`).
fn stack(leaf: usize, caller: usize) -> Vec<usize> {
    vec![leaf + 4, caller + 8]
}

fn pprof(go: &Path, args: &[&str], file: &Path) -> String {
    let home = std::env::temp_dir().join("span-profiler-go-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(go)
        .arg("tool")
        .arg("pprof")
        .args(args)
        .arg(file)
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("go tool pprof runs");
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Encodes a window with two labelled spans and one unlabelled sample and writes it.
fn write_profile(dir: &Path) -> PathBuf {
    let a = async {}.with_labels(Labels::span(SPAN_A, "POST /checkout"));
    let b = async {}.with_labels(Labels::span(SPAN_B, "GET /search").with("region", "eu"));
    let (id_a, id_b) = (label_id_of(&a), label_id_of(&b));
    assert!(id_a != 0 && id_b != 0);
    let checkout = stack(
        checkout_leaf_work as *const () as usize,
        checkout_handler as *const () as usize,
    );
    let search = stack(
        search_leaf_work as *const () as usize,
        search_handler as *const () as usize,
    );
    let raw = vec![
        (checkout.clone(), id_a, 5),
        (checkout.clone(), id_a, 2),
        (search.clone(), id_b, 3),
        (checkout, 0, 1),
    ];
    let end = SystemTime::now();
    let window = encode_window(&raw, end - Duration::from_secs(10), end, 100, None, None);
    assert_eq!(window.pieces.len(), 1);
    assert_eq!(window.total_weight, 11);
    // Our own decoder and the server rules first.
    let profile = decode(&window.pieces[0]).unwrap();
    validate(&profile).unwrap();
    let views = samples(&profile);
    assert_eq!(views.len(), 3);
    let path = dir.join(format!("pprof-go-{}.pb.gz", std::process::id()));
    std::fs::write(&path, &window.pieces[0]).unwrap();
    drop((a, b));
    path
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("span-profiler-pprof-go-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn go_tool_pprof_raw_prints_the_samples_with_span_labels_and_function_names() {
    let Some(go) = go() else { return };
    let dir = temp_dir();
    let file = write_profile(&dir);
    let raw = pprof(&go, &["-raw"], &file);
    assert!(raw.contains("PeriodType: cpu nanoseconds"), "{raw}");
    assert!(raw.contains("Period: 10000000"), "{raw}");
    assert!(raw.contains("samples/count cpu/nanoseconds"), "{raw}");
    assert!(raw.contains("span_id:[00f067aa0ba902b7]"), "{raw}");
    assert!(raw.contains("span_name:[POST /checkout]"), "{raw}");
    assert!(raw.contains("span_id:[123456789abcdef0]"), "{raw}");
    assert!(raw.contains("region:[eu]"), "{raw}");
    assert!(raw.contains("pprof_go::checkout_leaf_work"), "{raw}");
    assert!(raw.contains("pprof_go::checkout_handler"), "{raw}");
    assert!(raw.contains("pprof_go.rs"), "file names are present: {raw}");
    // Two samples of span A with the same stack were summed: 7 samples, 70 ms.
    assert!(raw.contains("7   70000000"), "{raw}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn go_tool_pprof_tagfocus_on_span_id_keeps_only_that_span_s_functions() {
    let Some(go) = go() else { return };
    let dir = temp_dir().join("tagfocus");
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_profile(&dir);
    let top = pprof(&go, &["-top", "-tagfocus=span_id=00f067aa0ba902b7"], &file);
    assert!(top.contains("checkout_leaf_work"), "{top}");
    assert!(!top.contains("search_leaf_work"), "{top}");
    assert!(top.contains("70ms"), "7 samples at 10 ms each: {top}");
    let top = pprof(&go, &["-top", "-tagfocus=span_id=123456789abcdef0"], &file);
    assert!(top.contains("search_leaf_work"), "{top}");
    assert!(!top.contains("checkout_leaf_work"), "{top}");
    let tags = pprof(&go, &["-tags"], &file);
    assert!(tags.contains("span_name"), "{tags}");
    assert!(tags.contains("GET /search"), "{tags}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_window_larger_than_the_piece_limits_is_split_into_valid_profiles_that_add_up() {
    let labels: Vec<_> = (0..40u64)
        .map(|i| async {}.with_labels(Labels::span(0x1000 + i, format!("route{}", i % 5))))
        .collect();
    let base = checkout_leaf_work as *const () as usize;
    let mut raw = Vec::new();
    let mut weight = 0;
    for i in 0..5000usize {
        // 5000 distinct stacks: the two innermost frames encode `i`.
        let mut frames = vec![base + i % 97, base + 100 + i / 97];
        frames.extend((0..28).map(|d| base + (d * 11) % 200));
        let w = (i % 4 + 1) as u64;
        weight += w;
        raw.push((frames, label_id_of(&labels[i % labels.len()]), w));
    }
    let end = SystemTime::now();
    let window = encode_window(
        &raw,
        end - Duration::from_secs(10),
        end,
        100,
        Some(128 * 1024),
        Some(1500),
    );
    assert!(window.pieces.len() >= 4, "{} pieces", window.pieces.len());
    let (mut count, mut cpu, mut n) = (0i64, 0i64, 0usize);
    for (gz, len) in window.pieces.iter().zip(&window.uncompressed_lens) {
        assert!(*len <= 128 * 1024, "{len}");
        let p = decode(gz).unwrap();
        validate(&p).unwrap();
        assert!(p.sample.len() <= 1500);
        n += p.sample.len();
        for s in &p.sample {
            count += s.value[0];
            cpu += s.value[1];
        }
    }
    let distinct: std::collections::HashSet<_> =
        raw.iter().map(|(f, l, _)| (f.clone(), *l)).collect();
    assert_eq!(
        n,
        distinct.len(),
        "one sample per distinct (stack, labels), none lost"
    );
    assert_eq!(window.samples_added, 5000);
    assert_eq!(count as u64, weight);
    assert_eq!(cpu as u64, weight * 10_000_000);
    assert_eq!(window.total_weight, weight);
}
