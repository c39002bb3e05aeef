//! The profiler end to end through its public API and the files it writes: attribution
//! on a migrating Tokio workload, a real decoder (`go tool pprof`), coverage, retention.
//!
//! Every test here starts the process-wide profiler, so they take `profiler_lock()`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use span_profiler::{Labels, ProfiledExt, Profiler};

const CLASSES: usize = 4;

#[inline(never)]
fn burn_class_0(slice: Duration) {
    spin_cpu(slice);
}
#[inline(never)]
fn burn_class_1(slice: Duration) {
    spin_cpu(slice);
}
#[inline(never)]
fn burn_class_2(slice: Duration) {
    spin_cpu(slice);
}
#[inline(never)]
fn burn_class_3(slice: Duration) {
    spin_cpu(slice);
}
#[inline(never)]
fn burn_unlabelled(slice: Duration) {
    spin_cpu(slice);
}

const BURNERS: [fn(Duration); CLASSES] = [burn_class_0, burn_class_1, burn_class_2, burn_class_3];
const BURNER_NAMES: [&str; CLASSES] = [
    "burn_class_0",
    "burn_class_1",
    "burn_class_2",
    "burn_class_3",
];

fn span_id(class: usize, task: usize) -> u64 {
    ((class as u64 + 1) << 32) | task as u64
}

fn class_of_span_hex(hex: &str) -> Option<usize> {
    let id = u64::from_str_radix(hex, 16).ok()?;
    let class = (id >> 32) as usize;
    (1..=CLASSES).contains(&class).then(|| class - 1)
}

/// Runs 4 classes x 4 labelled tasks plus one unlabelled burner on 4 workers for `run`,
/// each burning random 0.5-2 ms slices with `yield_now()` between; returns the CPU time
/// each class measured for itself (index 4: the unlabelled burner).
fn attribution_workload(run: Duration) -> [Duration; CLASSES + 1] {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let cpu: Arc<[AtomicU64; CLASSES + 1]> = Arc::new(Default::default());
    rt.block_on(async {
        let deadline = Instant::now() + run;
        let mut handles = Vec::new();
        for class in 0..=CLASSES {
            for task in 0..4 {
                if class == CLASSES && task > 0 {
                    break; // one unlabelled burner
                }
                let cpu = cpu.clone();
                let work = async move {
                    let mut rng = Rng::new((class * 16 + task) as u64 + 1);
                    while Instant::now() < deadline {
                        let slice = Duration::from_micros(rng.range(500, 2000));
                        let before = thread_cpu();
                        match BURNERS.get(class) {
                            Some(burn) => burn(slice),
                            None => burn_unlabelled(slice),
                        }
                        cpu[class].fetch_add((thread_cpu() - before).as_nanos() as u64, Relaxed);
                        tokio::task::yield_now().await;
                    }
                };
                handles.push(if class < CLASSES {
                    let labels = Labels::span(span_id(class, task), format!("class-{class}"));
                    tokio::spawn(work.with_labels(labels))
                } else {
                    tokio::spawn(work)
                });
            }
        }
        for handle in handles {
            handle.await.unwrap();
        }
    });
    std::array::from_fn(|i| Duration::from_nanos(cpu[i].load(Relaxed)))
}

#[test]
fn samples_in_files_carry_the_labels_of_the_task_that_burned_them() {
    let _lock = profiler_lock();
    let dir = temp_dir("attribution");
    let profiler = Profiler::builder()
        .application_name("e2e/attribution")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    // At 1 kHz a CPU timer still fires at most once per 4 ms kernel tick (weight 4 per
    // sample), so 6 s on 2 cores gives each class about 600 samples: enough for 15%.
    let measured = attribution_workload(Duration::from_secs(6));
    let report = profiler.stop().expect("profiler stops");
    assert!(
        report.files_written >= 3,
        "one file per 1 s window: {report:?}"
    );

    let samples = all_samples(&dir);
    // Per burner: samples that hold it, those with the right class, with a wrong class.
    let mut holding = [0u64; CLASSES + 1];
    let mut right = [0u64; CLASSES + 1];
    let mut wrong = [0u64; CLASSES + 1];
    // Labelled CPU time per class, from the cpu/nanoseconds values.
    let mut labelled_ns = [0i64; CLASSES];
    for s in &samples {
        let class = s.labels.get("span_id").and_then(|h| class_of_span_hex(h));
        if let Some(c) = class {
            labelled_ns[c] += s.values[1];
            assert_eq!(
                s.labels.get("span_name").map(String::as_str),
                Some(format!("class-{c}").as_str())
            );
        }
        let burner = s.functions.iter().find_map(|f| {
            if f.contains("burn_unlabelled") {
                return Some(CLASSES);
            }
            BURNER_NAMES.iter().position(|name| f.contains(name))
        });
        let Some(b) = burner else { continue };
        holding[b] += s.values[0] as u64;
        if b == CLASSES {
            if s.labels.contains_key("span_id") {
                wrong[b] += s.values[0] as u64;
            } else {
                right[b] += s.values[0] as u64;
            }
        } else if class == Some(b) {
            right[b] += s.values[0] as u64;
        } else if class.is_some() {
            wrong[b] += s.values[0] as u64;
        }
    }
    for b in 0..=CLASSES {
        assert!(
            holding[b] >= 200,
            "burner {b}: only {} samples: {holding:?}",
            holding[b]
        );
        assert_eq!(
            wrong[b], 0,
            "burner {b}: {} samples carry another class's labels",
            wrong[b]
        );
        let share = right[b] as f64 / holding[b] as f64;
        assert!(
            share >= 0.99,
            "burner {b}: only {:.2}% correctly labelled",
            share * 100.0
        );
    }
    for c in 0..CLASSES {
        let measured_ns = measured[c].as_nanos() as f64;
        let ratio = labelled_ns[c] as f64 / measured_ns;
        assert!(
            (0.85..=1.15).contains(&ratio),
            "class {c}: labelled {} ms vs measured {} ms (ratio {ratio:.3})",
            labelled_ns[c] / 1_000_000,
            measured[c].as_millis()
        );
    }
}

#[test]
fn go_tool_pprof_reads_the_files_and_tagfocus_selects_one_span() {
    let Some(go) = tool("go") else { return };
    let _lock = profiler_lock();
    let dir = temp_dir("go-pprof");
    let profiler = Profiler::builder()
        .application_name("e2e-go")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(5))
        .output_dir(&dir)
        .start()
        .unwrap();
    attribution_workload(Duration::from_millis(1500));
    profiler.stop().unwrap();
    let file = profile_files(&dir)
        .into_iter()
        .next()
        .expect("a profile file");
    let file = file.to_str().unwrap();

    let raw = go_pprof(&go, &["-raw", file]);
    let target = format!("{:016x}", span_id(2, 1));
    assert!(
        raw.contains("span_id:["),
        "no span_id labels in -raw output:\n{raw}"
    );
    assert!(
        raw.contains("span_name:[class-2]"),
        "no span_name label:\n{raw}"
    );
    assert!(
        raw.contains(&target),
        "span {target} missing from -raw output"
    );

    let focused = go_pprof(
        &go,
        &["-traces", &format!("-tagfocus=span_id=^{target}$"), file],
    );
    assert!(
        focused.contains("burn_class_2"),
        "tagfocus lost the span's function:\n{focused}"
    );
    for other in [
        "burn_class_0",
        "burn_class_1",
        "burn_class_3",
        "burn_unlabelled",
    ] {
        assert!(
            !focused.contains(other),
            "tagfocus on {target} shows {other}:\n{focused}"
        );
    }
}

#[test]
fn coverage_is_at_least_90_percent_for_two_busy_threads() {
    let _lock = profiler_lock();
    let dir = temp_dir("coverage");
    let profiler = Profiler::builder()
        .application_name("e2e-coverage")
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .unwrap();
    let threads: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(|| spin_cpu(Duration::from_secs(2))))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(250)); // one more drain
    let stats = profiler.stats();
    let report = profiler.stop().unwrap();
    let coverage = stats.coverage().expect("process CPU measured");
    assert!(coverage >= 0.9, "coverage {coverage:.3}: {stats:?}");
    assert!(
        coverage <= 1.1,
        "coverage {coverage:.3} above 1: double counting? {stats:?}"
    );
    assert!(!report.stats.frame_pointers_missing, "{:?}", report.stats);
    assert_eq!(report.stats.dropped.buffer_full, 0);
}

#[test]
fn retention_keeps_at_most_3_files_after_each_window_and_after_stop() {
    let _lock = profiler_lock();
    let dir = temp_dir("retention-e2e");
    let profiler = Profiler::builder()
        .application_name("e2e-retention")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(200))
        .output_dir(&dir)
        .max_files(3)
        .start()
        .unwrap();
    let busy = std::thread::spawn(|| spin_cpu(Duration::from_millis(2000)));
    let mut max_seen = 0;
    let deadline = Instant::now() + Duration::from_millis(2200);
    while Instant::now() < deadline {
        max_seen = max_seen.max(profile_files(&dir).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    busy.join().unwrap();
    let report = profiler.stop().unwrap();
    max_seen = max_seen.max(profile_files(&dir).len());
    assert!(report.files_written >= 6, "{report:?}");
    assert_eq!(profile_files(&dir).len(), 3);
    assert!(max_seen <= 3, "saw {max_seen} files");
    assert_eq!(report.stats.files_deleted, report.files_written - 3);
    // No temporary files are left behind either.
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 3, "{leftovers:?}");
}

#[test]
fn a_second_start_while_running_is_refused_and_bad_options_say_the_fix() {
    let _lock = profiler_lock();
    let dir = temp_dir("second-start");
    let first = Profiler::builder()
        .application_name("a")
        .output_dir(&dir)
        .start()
        .unwrap();
    let err = Profiler::builder()
        .application_name("b")
        .output_dir(&dir)
        .start()
        .unwrap_err();
    assert!(
        matches!(err, span_profiler::StartError::AlreadyRunning),
        "{err}"
    );
    first.stop().unwrap();
    let err = Profiler::builder()
        .application_name("a")
        .sample_rate(0)
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("1 to 10000 Hz"), "{err}");
    // After a stop, a new profiler starts again.
    let again = Profiler::builder()
        .application_name("a")
        .output_dir(&dir)
        .start()
        .unwrap();
    drop(again); // Drop stops it.
}
