//! The local files as a user's environment treats them: the output directory deleted
//! while the profiler runs, a full disk (a small tmpfs), and `kill -9` in the middle of
//! writing. The tmpfs and `kill -9` cases run in child processes of this test binary
//! (entry points marked `#[ignore]`, started by the tests with `--ignored --exact`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{load_profiles, profile_files, profiler_lock, spin_cpu, temp_dir};
use span_profiler::{Labels, ProfiledExt, Profiler};

#[inline(never)]
fn files_burn(slice: Duration) {
    spin_cpu(slice);
}

/// Labelled CPU work on the calling thread for `run` of wall time.
fn labelled_work(run: Duration) {
    let deadline = Instant::now() + run;
    futures_lite_block_on(
        async move {
            while Instant::now() < deadline {
                files_burn(Duration::from_millis(2));
            }
        }
        .with_labels(Labels::span(0xf11e, "files-route")),
    );
}

/// Polls a future that never waits to completion (no runtime needed).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

fn required() -> bool {
    std::env::var("SPAN_PROFILER_REQUIRE_TOOLS").as_deref() == Ok("1")
}

#[test]
fn a_deleted_output_directory_is_created_again_and_later_windows_are_written() {
    let _lock = profiler_lock();
    let dir = temp_dir("files-deleted-dir");
    let profiler = Profiler::builder()
        .application_name("files-env")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(200))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    // The writer symbolizes and writes behind the windows: wait for it, generously.
    let deadline = Instant::now() + Duration::from_secs(60);
    while profile_files(&dir).is_empty() && Instant::now() < deadline {
        labelled_work(Duration::from_millis(200));
    }
    assert!(
        !profile_files(&dir).is_empty(),
        "windows written before the deletion"
    );
    // As a tmp cleaner does; the writer may add a file meanwhile, so until it is gone.
    while dir.exists() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(dir.is_dir() && profile_files(&dir).len() >= 2) && Instant::now() < deadline {
        labelled_work(Duration::from_millis(200));
    }
    let report = profiler.stop().expect("stops");
    assert!(dir.is_dir(), "the directory exists again");
    let after = load_profiles(&dir);
    assert!(
        after.len() >= 2,
        "later windows written again: {}",
        after.len()
    );
    assert!(report.stats.output_dir_recreated >= 1, "{:?}", report.stats);
    assert_eq!(report.stats.file_errors, 0, "{:?}", report.stats);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `entry` (an ignored test of this binary) in a child process with `envs`.
fn child(entry: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--ignored",
        "--exact",
        entry,
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

#[test]
fn on_a_full_tmpfs_the_oldest_profiles_are_evicted_and_the_newest_windows_kept() {
    let mount = temp_dir("files-tmpfs");
    let exe = std::env::current_exe().unwrap();
    // A private mount namespace: the tmpfs is visible to the child only and vanishes
    // with it. Needs the right to mount (root, as .ci/run runs).
    let script = format!(
        "mount -t tmpfs -o size=96k tmpfs '{m}' && exec '{exe}' --ignored --exact \
         full_tmpfs_child --nocapture --test-threads=1",
        m = mount.display(),
        exe = exe.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env("SPAN_PROFILER_TMPFS", &mount)
        .output();
    let out = match out {
        Ok(out) => out,
        Err(err) => {
            assert!(
                !required(),
                "`unshare` cannot run ({err}); SPAN_PROFILER_REQUIRE_TOOLS=1"
            );
            eprintln!("SKIPPED: `unshare` cannot run: {err}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("tmpfs mounted") {
        assert!(
            !required(),
            "could not mount a tmpfs (run as root; SPAN_PROFILER_REQUIRE_TOOLS=1): {stderr}"
        );
        eprintln!("SKIPPED: this process may not mount a tmpfs: {stderr}");
        return;
    }
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("full disk handled"), "{stdout}");
    let _ = std::fs::remove_dir_all(&mount);
}

#[test]
#[ignore = "entry point of the tmpfs test's child process"]
fn full_tmpfs_child() {
    let dir = PathBuf::from(std::env::var("SPAN_PROFILER_TMPFS").expect("set by the parent"));
    println!("tmpfs mounted");
    let profiler = Profiler::builder()
        .application_name("files-full")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(100))
        .output_dir(&dir)
        .max_files(100_000)
        .start()
        .expect("profiler starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && profiler.stats().files_evicted_for_space < 5 {
        labelled_work(Duration::from_millis(300));
    }
    let report = profiler.stop().expect("stops");
    let stats = &report.stats;
    assert!(
        stats.files_evicted_for_space >= 5,
        "the disk never filled: {stats:?}"
    );
    // The newest windows are there: the last file is from the last second of the run.
    let profiles = load_profiles(&dir);
    assert!(!profiles.is_empty());
    let newest = newest_start_ms(&dir);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert!(
        now_ms - newest < 2_000,
        "newest file is {} ms old",
        now_ms - newest
    );
    assert!(
        stats.file_errors * 10 <= stats.files_written,
        "windows kept by eviction, not lost: {stats:?}"
    );
    println!("full disk handled: {stats:?}");
}

fn newest_start_ms(dir: &Path) -> u128 {
    profile_files(dir)
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_str()?;
            name.strip_suffix(".pb.gz")?
                .rsplit('-')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn kill_9_while_writing_leaves_only_complete_valid_profile_files() {
    let dir = temp_dir("files-kill9");
    let dir_text = dir.to_str().unwrap().to_owned();
    let mut child = child("writing_child", &[("SPAN_PROFILER_KILL_DIR", &dir_text)])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("child starts");
    let deadline = Instant::now() + Duration::from_secs(30);
    while profile_files(&dir).len() < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(profile_files(&dir).len() >= 5, "the child wrote no files");
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    // Every file a reader can see decodes and passes the server's rules.
    let profiles = load_profiles(&dir);
    assert!(profiles.len() >= 5);
    // A new start in the same directory removes the dead process's temporaries.
    {
        let _lock = profiler_lock();
        let profiler = Profiler::builder()
            .application_name("files-kill")
            .output_dir(&dir)
            .start()
            .expect("profiler starts");
        profiler.stop().expect("stops");
    }
    let leftovers: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    load_profiles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "entry point of the kill -9 test's child process"]
fn writing_child() {
    let dir = PathBuf::from(std::env::var("SPAN_PROFILER_KILL_DIR").expect("set by the parent"));
    let _profiler = Profiler::builder()
        .application_name("files-kill")
        .sample_rate(1000)
        .upload_interval(Duration::from_millis(100))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");
    // Until the parent kills it.
    loop {
        labelled_work(Duration::from_millis(100));
    }
}
