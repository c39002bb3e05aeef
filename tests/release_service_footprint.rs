//! The profiler's footprint in the release test service (`tests/apps/unwind-app`, binary
//! `service`: axum with the tower layer, release, line tables, no frame pointers, as users
//! build it). The service runs under the same in-process load for four one-second
//! windows, alternately without and with the profiler (CPU profiles, default options:
//! the DWARF unwinder's tables and the symbolizer at its default budget), three pairs.
//! The median of what the profiler adds to the peak resident set (`VmHWM`, mapped files
//! included) must stay at most 32 MiB: a wide guard around the 24 MiB goal, which
//! `benches/README.md` reports against.

mod apps;

use std::path::Path;
use std::process::Command;

const WINDOWS: u32 = 4;
const PAIRS: usize = 3;
/// Peak resident memory the profiler may add (median of the pairs).
const MAX_ADDED_HWM_KIB: u64 = 32 * 1024;

/// One run of the service and the line it printed.
fn run(service: &Path, mode: &str, out: &Path) -> apps::ResultLine {
    let mut command = Command::new(service);
    command.arg(mode).arg(out).arg(WINDOWS.to_string());
    apps::ResultLine::of_run(&mut command, &format!("service {mode}"))
}

#[test]
fn the_profiler_adds_at_most_32_mib_to_the_release_services_peak_resident_set() {
    let service = apps::build(
        "no-frame-pointers",
        "-C force-frame-pointers=no",
        &["service"],
        "service",
    );
    let size_mib = std::fs::metadata(&service).map_or(0, |m| m.len()) >> 20;
    let mut added = Vec::new();
    for pair in 0..PAIRS {
        let dir = apps::temp_dir(&format!("release-service-{pair}"));
        let bare = run(&service, "bare", &dir);
        let profiled = run(&service, "profiled", &dir);
        println!("pair {pair}: bare     {}", bare.0);
        println!("pair {pair}: profiled {}", profiled.0);
        assert!(
            bare.value("requests") > 0 && profiled.value("requests") > 0,
            "no requests served: {} / {}",
            bare.0,
            profiled.0
        );
        assert!(
            profiled.value("files") >= u64::from(WINDOWS) - 1,
            "only {} windows written: {}",
            profiled.value("files"),
            profiled.0
        );
        added.push(
            profiled
                .value("hwm_kib")
                .saturating_sub(bare.value("hwm_kib")),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    added.sort_unstable();
    let median = added[added.len() / 2];
    println!(
        "footprint: the profiler added {median} KiB to VmHWM (median; pairs {added:?} KiB) \
         to the {size_mib} MiB release service over {WINDOWS} windows"
    );
    assert!(
        median <= MAX_ADDED_HWM_KIB,
        "the profiler added {median} KiB (> {MAX_ADDED_HWM_KIB} KiB) to the peak RSS of the \
         release service; pairs: {added:?} KiB"
    );
}
