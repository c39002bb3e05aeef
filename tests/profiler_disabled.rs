//! `SPAN_PROFILER_ENABLED=false` switches profiling off without a rebuild: `start()`
//! returns an inert profiler that starts no thread, arms no timer and writes nothing.
//! (Its own test binary: it sets a process-wide environment variable.)

mod common;

use std::time::Duration;

use span_profiler::Profiler;

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn a_disabled_profiler_does_nothing_and_stops_cleanly() {
    // This binary runs this one test: no other thread reads the environment meanwhile.
    std::env::set_var("SPAN_PROFILER_ENABLED", "false");
    let dir = common::temp_dir("disabled");
    let threads_before = thread_count();
    let profiler = Profiler::builder()
        .application_name("disabled")
        .upload_interval(Duration::from_millis(100))
        .output_dir(&dir)
        .start()
        .expect("a disabled profiler still starts");
    assert!(!profiler.is_active());
    common::spin_cpu(Duration::from_millis(300));
    assert_eq!(thread_count(), threads_before, "no profiler threads");
    assert_eq!(profiler.stats().samples, 0);
    // A second, also disabled, start is not refused: nothing is running.
    let second = Profiler::builder()
        .application_name("disabled")
        .start()
        .unwrap();
    let report = profiler.stop().expect("stop succeeds");
    assert_eq!(report.files_written, 0);
    assert_eq!(std::fs::read_dir(&dir).map_or(0, |d| d.count()), 0);
    drop(second);

    // A bad value is an error that names the variable.
    std::env::set_var("SPAN_PROFILER_ENABLED", "maybe");
    let err = Profiler::builder()
        .application_name("x")
        .start()
        .unwrap_err();
    assert!(err.to_string().contains("SPAN_PROFILER_ENABLED"), "{err}");
}
