//! The symbolizer on a real service: an axum server on 127.0.0.1 under load from an
//! in-process hyper client, profiled for several windows, in a child process of this test
//! binary (so that each run's peak memory is its own).
//!
//! - Names: in the profiles, read back by `go tool pprof -raw`, at least 95% of the
//!   sampled frames of this binary carry a `::`-qualified name, and no name is cut inside
//!   a generic argument list.
//! - Footprint: the same service under the same load for at least three windows, with
//!   and without the profiler; the profiler may add at most 32 MiB to the peak resident
//!   set (`VmHWM`, mapped files included).
//!
//! `cargo test --release --features tower --test symbolize_service` checks the
//! `line-tables-only` release build (this crate's release profile); a plain `cargo test`
//! checks the same on the debug build's full debug info. A custom harness: the binary is
//! also the child.

mod apps;
#[path = "apps/unwind-app/src/serve.rs"]
mod serve;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;
use tools::go;

use span_profiler::Profiler;

/// Set in a child: `profiled:<dir>` or `bare`.
const CHILD_ENV: &str = "SPAN_PROFILER_SERVICE_TEST_CHILD";
const WINDOW: Duration = Duration::from_secs(1);
/// Windows of load (the last one is flushed by `stop()`).
const WINDOWS: u32 = 4;
/// Peak resident memory the profiler may add.
const MAX_ADDED_HWM_KIB: u64 = 32 * 1024;
/// Share of this binary's sampled frames that must have a qualified name.
const MIN_QUALIFIED: f64 = 0.95;

fn child(mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let profiler = match mode.strip_prefix("profiled:") {
        Some(dir) => Some(
            Profiler::builder()
                .application_name("symbolize-service-test")
                .upload_interval(WINDOW)
                .output_dir(dir)
                .start()?,
        ),
        None => None,
    };
    let requests = serve::serve_under_load(WINDOW * WINDOWS + WINDOW / 2, false)?;
    let symbolizer = match profiler {
        Some(p) => format!("{:?}", p.stop()?.stats.symbolizer),
        None => "none".into(),
    };
    println!(
        "RESULT requests={requests} hwm_kib={} rss_anon_kib={} rss_file_kib={} symbolizer={symbolizer}",
        serve::status_kib("VmHWM:"),
        serve::status_kib("RssAnon:"),
        serve::status_kib("RssFile:"),
    );
    Ok(())
}

/// What a child printed.
struct ChildRun {
    requests: u64,
    hwm_kib: u64,
    line: String,
}

fn run_child(mode: &str) -> ChildRun {
    let exe = std::env::current_exe().expect("own path");
    let mut command = Command::new(exe);
    command.env(CHILD_ENV, mode);
    let result = apps::ResultLine::of_run(&mut command, &format!("child {mode}"));
    ChildRun {
        requests: result.value("requests"),
        hwm_kib: result.value("hwm_kib"),
        line: result.0,
    }
}

fn profile_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("profile dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".pb.gz"))
        .collect();
    files.sort();
    files
}

/// One location line of `go tool pprof -raw`: its mapping and function name.
#[derive(Debug)]
struct RawFrame {
    location: u64,
    mapping: u64,
    name: String,
}

/// A `go tool pprof -raw` dump, parsed.
struct RawDump {
    /// Every function line of the `Locations` section.
    frames: Vec<RawFrame>,
    /// `Mappings`: id and the rest of its line (addresses, file).
    mappings: Vec<(u64, String)>,
    /// Each sample's location ids, leaf first.
    samples: Vec<Vec<u64>>,
}

/// The `Locations` and `Mappings` sections and the sample location lists of a `-raw`
/// dump.
fn parse_raw(text: &str) -> RawDump {
    let mut frames = Vec::new();
    let mut mappings = Vec::new();
    let mut samples = Vec::new();
    let mut section = "";
    let (mut location, mut mapping) = (0u64, 0u64);
    for line in text.lines() {
        match line.trim_end() {
            "Samples:" | "Locations" | "Mappings" => {
                section = line.trim_end();
                continue;
            }
            _ => {}
        }
        let trimmed = line.trim();
        match section {
            "Samples:" => {
                if let Some((_, ids)) = trimmed.split_once(": ") {
                    let ids: Vec<u64> = ids
                        .split_whitespace()
                        .filter_map(|i| i.parse().ok())
                        .collect();
                    if !ids.is_empty() {
                        samples.push(ids);
                    }
                }
            }
            "Locations" => {
                // `12: 0x55d0 M=1 name file:line s=0`, then `name file:line s=0` for the
                // callers it was inlined into.
                let rest = match trimmed.split_once(": 0x") {
                    Some((id, rest)) if id.chars().all(|c| c.is_ascii_digit()) => {
                        location = id.parse().unwrap_or(0);
                        let (_, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                        let (m, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                        mapping = m.trim_start_matches("M=").parse().unwrap_or(0);
                        rest
                    }
                    _ => trimmed,
                };
                let Some((head, _)) = rest.rsplit_once(" s=") else {
                    continue;
                };
                // Drop ` file:line`: the last space-separated field.
                let name = head.rsplit_once(' ').map_or(head, |(n, _)| n).trim();
                if !name.is_empty() {
                    frames.push(RawFrame {
                        location,
                        mapping,
                        name: name.to_owned(),
                    });
                }
            }
            "Mappings" => {
                if let Some((id, rest)) = trimmed.split_once(": ") {
                    if let Ok(id) = id.parse() {
                        mappings.push((id, rest.to_owned()));
                    }
                }
            }
            _ => {}
        }
    }
    RawDump {
        frames,
        mappings,
        samples,
    }
}

/// Whether `name` opens and closes its angle brackets in order (`->` is no bracket, nor
/// `.>`, as demangled legacy symbols spell it).
fn brackets_balanced(name: &str) -> bool {
    let mut depth = 0i32;
    let mut prev = ' ';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            '>' if prev != '-' && prev != '.' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
        prev = c;
    }
    depth == 0
}

fn sampled_frames_of_this_binary_have_qualified_names_and_whole_generic_lists() {
    let Some(go) = go() else { return };
    let dir = apps::temp_dir("symbolize-service-names");
    let run = run_child(&format!("profiled:{}", dir.display()));
    assert!(run.requests > 0, "{}", run.line);
    let files = profile_files(&dir);
    assert!(files.len() >= 3, "windows written: {files:?}");
    let exe = std::env::current_exe().expect("own path");
    let exe = exe.to_string_lossy();
    let (mut frames_total, mut qualified) = (0u64, 0u64);
    let mut unqualified: Vec<String> = Vec::new();
    for file in &files {
        let out = Command::new(&go)
            .args(["tool", "pprof", "-raw"])
            .arg(file)
            .env("HOME", std::env::temp_dir())
            .output()
            .expect("go tool pprof runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let RawDump {
            frames,
            mappings,
            samples,
        } = parse_raw(&text);
        let main: Vec<u64> = mappings
            .iter()
            .filter(|(_, m)| m.contains(&*exe))
            .map(|(id, _)| *id)
            .collect();
        assert!(!main.is_empty(), "no mapping of {exe}: {mappings:?}");
        for frame in &frames {
            assert!(
                brackets_balanced(&frame.name),
                "a name cut inside a generic list: {}",
                frame.name
            );
        }
        for sample in &samples {
            for id in sample {
                for frame in frames
                    .iter()
                    .filter(|f| f.location == *id && main.contains(&f.mapping))
                {
                    frames_total += 1;
                    if frame.name.contains("::") {
                        qualified += 1;
                    } else if unqualified.len() < 20 && !unqualified.contains(&frame.name) {
                        unqualified.push(frame.name.clone());
                    }
                }
            }
        }
    }
    assert!(frames_total > 100, "too few frames sampled: {frames_total}");
    let share = qualified as f64 / frames_total as f64;
    println!(
        "names: {qualified} of {frames_total} sampled frames of this binary qualified ({:.1}%); unqualified examples: {unqualified:?}",
        share * 100.0
    );
    assert!(
        share >= MIN_QUALIFIED,
        "{:.1}% qualified (< {:.0}%); unqualified: {unqualified:?}",
        share * 100.0,
        MIN_QUALIFIED * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn the_profiler_adds_at_most_32_mib_to_the_peak_resident_set_under_load() {
    let dir = apps::temp_dir("symbolize-service-rss");
    let bare = run_child("bare");
    let profiled = run_child(&format!("profiled:{}", dir.display()));
    let windows = profile_files(&dir).len();
    let added = profiled.hwm_kib.saturating_sub(bare.hwm_kib);
    println!("footprint: bare {}", bare.line);
    println!("footprint: profiled {}", profiled.line);
    println!(
        "footprint: the profiler added {} KiB to VmHWM over {windows} windows",
        added
    );
    assert!(windows >= 3, "only {windows} windows written");
    assert!(
        bare.requests > 0 && profiled.requests > 0,
        "{} / {}",
        bare.line,
        profiled.line
    );
    assert!(
        added <= MAX_ADDED_HWM_KIB,
        "the profiler added {added} KiB (> {MAX_ADDED_HWM_KIB} KiB) to the peak RSS: bare {} / profiled {}",
        bare.line,
        profiled.line
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() -> ExitCode {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        return match child(&mode) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("child {mode}: {err}");
                ExitCode::FAILURE
            }
        };
    }
    // `cargo test -- --list` and filters: this harness runs both checks, in order.
    if std::env::args().any(|a| a == "--list") {
        println!(
            "sampled_frames_of_this_binary_have_qualified_names_and_whole_generic_lists: test"
        );
        println!("the_profiler_adds_at_most_32_mib_to_the_peak_resident_set_under_load: test");
        return ExitCode::SUCCESS;
    }
    let tests: [(&str, fn()); 2] = [
        (
            "sampled_frames_of_this_binary_have_qualified_names_and_whole_generic_lists",
            sampled_frames_of_this_binary_have_qualified_names_and_whole_generic_lists,
        ),
        (
            "the_profiler_adds_at_most_32_mib_to_the_peak_resident_set_under_load",
            the_profiler_adds_at_most_32_mib_to_the_peak_resident_set_under_load,
        ),
    ];
    let mut failed = 0;
    for (name, test) in tests {
        match std::panic::catch_unwind(test) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
