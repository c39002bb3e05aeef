//! Complete stacks without frame pointers: the test application `tests/apps/unwind-app`
//! (a Tokio service: `handle_request` -> `render` -> `leaf_burner`, release, line
//! tables) is built twice in this run, once as users build it (no frame pointers) and
//! once with `-C force-frame-pointers=yes`, each in its own target directory. Each
//! build profiles itself into pprof files, which `go tool pprof -raw` (Debian
//! `golang-go`) reads back. Of the samples in `leaf_burner`, at least 95% must reach the
//! handler and the Tokio worker loop in both builds, and the median stack depth without
//! frame pointers must be within 10% of the frame-pointer build's, and at least 95% of the
//! sampled frames in Rust source carry a `::`-qualified name, none cut inside a generic
//! list.
//!
//! Without `go` on the PATH the test prints a skip message, unless
//! `SPAN_PROFILER_REQUIRE_TOOLS=1`, which makes it fail.

mod apps;
mod tools;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tools::go;

/// Runs the application for `requests` with `unwinder`; returns its pprof files and its `key=value`
/// lines.
fn run_app(
    app: &Path,
    flavour: &str,
    unwinder: &str,
    requests: u32,
) -> (Vec<PathBuf>, HashMap<String, String>) {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "unwind-app-profiles-{flavour}-{unwinder}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(app)
        .arg(&out)
        .arg(requests.to_string())
        .arg(unwinder)
        .output()
        .expect("run the application");
    assert!(
        run.status.success(),
        "the {flavour} application failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let values = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let files = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "gz"))
        .collect();
    (files, values)
}

/// One location of `go tool pprof -raw`: its lines, innermost (inlined) first, as
/// (function, file).
type Location = Vec<(String, String)>;

/// One sample of `go tool pprof -raw`: its count and location ids, leaf first.
type RawSample = (u64, Vec<u64>);

/// Samples and locations of `go tool pprof -raw`.
fn raw(go: &Path, files: &[PathBuf]) -> (Vec<RawSample>, HashMap<u64, Location>) {
    let home = std::env::temp_dir().join("span-profiler-go-home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(go)
        .args(["tool", "pprof", "-raw"])
        .args(files)
        .env("HOME", &home)
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("go tool pprof runs");
    assert!(
        out.status.success(),
        "go tool pprof -raw failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut samples = Vec::new();
    let mut locations: HashMap<u64, Location> = HashMap::new();
    let mut section = "";
    let mut current: Option<u64> = None;
    for line in text.lines() {
        match line {
            "Samples:" | "Locations" | "Mappings" => {
                section = line;
                continue;
            }
            _ => {}
        }
        if section == "Samples:" {
            // `     2    8000000: 1 2 3 ` (labels follow on their own lines).
            let Some((values, ids)) = line.split_once(": ") else {
                continue;
            };
            let Some(count) = values
                .split_whitespace()
                .next()
                .and_then(|c| c.parse().ok())
            else {
                continue;
            };
            let ids: Vec<u64> = ids
                .split_whitespace()
                .filter_map(|i| i.parse().ok())
                .collect();
            if !ids.is_empty() {
                samples.push((count, ids));
            }
        } else if section == "Locations" {
            // `     3: 0x55f9 M=1 func file:line s=..` then `             func file:line`.
            let trimmed = line.trim_start();
            let (id, rest) = match trimmed.split_once(": 0x") {
                Some((id, rest)) if id.chars().all(|c| c.is_ascii_digit()) => {
                    let id: u64 = id.parse().unwrap();
                    current = Some(id);
                    (id, rest.split_once(' ').map_or("", |r| r.1))
                }
                _ => match current {
                    Some(id) => (id, trimmed),
                    None => continue,
                },
            };
            // Names may hold spaces (`<T as Trait>::poll`): the file is the last word
            // before the optional `s=<start line>`, the name everything before it.
            let mut words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("M="))
                .collect();
            if words.last().is_some_and(|w| w.starts_with("s=")) {
                words.pop();
            }
            let Some(file) = words.pop() else { continue };
            if words.is_empty() {
                continue;
            }
            let func = words.join(" ");
            let file = file.rsplit_once(':').map_or(file, |f| f.0);
            locations
                .entry(id)
                .or_default()
                .push((func, file.to_string()));
        }
    }
    (samples, locations)
}

/// Of the samples whose leaf is `leaf_burner`: how many (weighted), how many reach both
/// the handler and the Tokio worker loop, and each one's depth in frames.
struct Summary {
    leaf: u64,
    complete: u64,
    depths: Vec<usize>,
}

fn summarise(samples: &[RawSample], locations: &HashMap<u64, Location>) -> Summary {
    let lines = |id: &u64| locations.get(id).map(Vec::as_slice).unwrap_or(&[]);
    // Names are qualified (`unwind_app::leaf_burner`); match the last path segment.
    let is = |id: &u64, func: &str, file_suffix: &str| {
        lines(id).iter().any(|(f, file)| {
            (f == func || f.ends_with(&format!("::{func}"))) && file.ends_with(file_suffix)
        })
    };
    let mut summary = Summary {
        leaf: 0,
        complete: 0,
        depths: Vec::new(),
    };
    for (count, ids) in samples {
        let Some(leaf) = ids.first() else { continue };
        // The leaf location is in `leaf_burner` (its innermost line may be a function
        // inlined into it, such as `black_box`).
        if !is(leaf, "leaf_burner", "src/main.rs") {
            continue;
        }
        summary.leaf += count;
        let handler = ids.iter().any(|id| is(id, "{async_fn#0}", "src/main.rs"));
        let worker = ids
            .iter()
            .any(|id| is(id, "run", "scheduler/multi_thread/worker.rs"));
        if handler && worker {
            summary.complete += count;
        }
        for _ in 0..*count {
            summary.depths.push(ids.len());
        }
    }
    summary
}

/// Readable names in a `line-tables-only` release build: of the sampled frames in Rust
/// source (`.rs` files), at least 95% carry a `::`-qualified name, and no name is cut
/// inside a generic argument list (every `<` closed).
fn check_names(samples: &[RawSample], locations: &HashMap<u64, Location>) {
    let (mut rust, mut qualified) = (0u64, 0u64);
    let mut unqualified: HashMap<&str, u64> = HashMap::new();
    for (count, ids) in samples {
        for (func, file) in ids.iter().filter_map(|id| locations.get(id)).flatten() {
            if !file.ends_with(".rs") {
                continue;
            }
            rust += count;
            if func.contains("::") {
                qualified += count;
            } else {
                *unqualified.entry(func).or_default() += count;
            }
            let opened = func.matches('<').count();
            let closed = func.matches('>').count() - func.matches("->").count();
            assert_eq!(opened, closed, "a name cut inside a generic list: {func}");
        }
    }
    eprintln!(
        "names: {qualified} of {rust} sampled Rust frames are qualified; others: {unqualified:?}"
    );
    assert!(rust > 0, "no sampled frame in Rust source");
    assert!(
        qualified * 100 >= rust * 95,
        "only {qualified} of {rust} sampled Rust frames carry a qualified name: {unqualified:?}"
    );
}

fn median(values: &mut [usize]) -> usize {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

#[test]
fn a_release_build_without_frame_pointers_unwinds_from_the_leaf_to_the_handler_and_the_tokio_worker(
) {
    let Some(go) = go() else { return };
    let mut depths = Vec::new();
    for (flavour, rustflags) in [
        ("no-frame-pointers", "-C force-frame-pointers=no"),
        ("frame-pointers", "-C force-frame-pointers=yes"),
    ] {
        let app = apps::build(flavour, rustflags, &[], "unwind-app");
        let (files, values) = run_app(&app, flavour, "auto", 800);
        let value = |key: &str| -> u64 {
            values
                .get(key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{flavour}: no `{key}` in {values:?}"))
        };
        assert!(
            !files.is_empty(),
            "{flavour}: no profile written: {values:?}"
        );
        assert_eq!(
            values.get("frame_pointers_missing").map(String::as_str),
            Some("false"),
            "{flavour}: {values:?}"
        );
        assert!(value("unwind_objects") >= 3, "{flavour}: {values:?}");
        assert_eq!(value("unwind_objects_failed"), 0, "{flavour}: {values:?}");
        assert!(value("unwind_table_bytes") > 0, "{flavour}: {values:?}");
        assert!(
            value("unwound_dwarf") * 10 >= value("samples") * 9,
            "{flavour}: most samples are unwound by CFI: {values:?}"
        );
        let (samples, locations) = raw(&go, &files);
        let mut summary = summarise(&samples, &locations);
        let depth = median(&mut summary.depths);
        eprintln!(
            "{flavour}: {} of {} leaf_burner samples reach the handler and the worker loop; \
             median depth {depth} frames; app: {values:?}",
            summary.complete, summary.leaf
        );
        assert!(
            summary.leaf >= 50,
            "{flavour}: only {} samples in leaf_burner",
            summary.leaf
        );
        assert!(
            summary.complete * 100 >= summary.leaf * 95,
            "{flavour}: only {} of {} leaf_burner samples reach the handler and the worker loop",
            summary.complete,
            summary.leaf
        );
        depths.push(depth);

        if flavour == "no-frame-pointers" {
            check_names(&samples, &locations);
            // The control: frame pointers alone cannot walk this build.
            let (files, values) = run_app(&app, flavour, "frame-pointers", 300);
            let (samples, locations) = raw(&go, &files);
            let summary = summarise(&samples, &locations);
            eprintln!(
                "{flavour} walked by frame pointers: {} of {} leaf_burner samples complete; \
                 app: {values:?}",
                summary.complete, summary.leaf
            );
            assert!(
                summary.complete * 2 < summary.leaf,
                "frame pointers should not walk a build without them: {} of {}",
                summary.complete,
                summary.leaf
            );
        }
    }
    let (without, with) = (depths[0], depths[1]);
    assert!(
        without * 10 >= with * 9 && without * 10 <= with * 11,
        "median depth without frame pointers {without}, with {with}: not within 10%"
    );
}
