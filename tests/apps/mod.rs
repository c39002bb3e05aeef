//! The release test service in `tests/apps/unwind-app`, built as users build it: a
//! package of its own, outside this workspace, in release with line tables; and the
//! `RESULT` line its runs print.
// Each test that includes this module uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Copies `src` to `dst`, rewriting only files whose bytes changed (so that cargo's
/// fingerprints stay valid between runs).
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to);
        } else {
            let bytes = std::fs::read(entry.path()).unwrap();
            if std::fs::read(&to).ok().as_ref() != Some(&bytes) {
                std::fs::write(&to, bytes).unwrap();
            }
        }
    }
}

/// Copies the application next to the test's temporary directory (so that this
/// repository's `.cargo/config.toml` does not apply), builds binary `bin` with `features`
/// and `rustflags` into the target directory of `flavour`, and returns the binary's path.
/// Tests that share a flavour share its build.
pub fn build(flavour: &str, rustflags: &str, features: &[&str], bin: &str) -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let app = manifest_dir.join("tests/apps/unwind-app");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unwind-app");
    copy_tree(&app.join("src"), &dir.join("src"));
    let manifest = std::fs::read_to_string(app.join("Cargo.toml"))
        .unwrap()
        .replace(
            r#"path = "../../..""#,
            &format!("path = {:?}", manifest_dir.to_str().unwrap()),
        );
    if std::fs::read_to_string(dir.join("Cargo.toml"))
        .ok()
        .as_ref()
        != Some(&manifest)
    {
        std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    }
    if !dir.join("Cargo.lock").exists() {
        std::fs::copy(manifest_dir.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    }
    let target = dir.join(format!("target-{flavour}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--bin",
            bin,
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--features")
        .arg(features.join(","))
        .arg("--target-dir")
        .arg(&target)
        .current_dir(&dir)
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building `{bin}` of the test application ({flavour}) failed"
    );
    target.join("release").join(bin)
}

/// A fresh, empty directory `span-profiler-test-<name>-<pid>` in the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("span-profiler-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The `RESULT key=value ...` line of a service run (`src/bin/service.rs`, or the child
/// of `tests/symbolize_service.rs`).
pub struct ResultLine(pub String);

impl ResultLine {
    /// Runs `command`, which must succeed, and returns its line; `what` names it in
    /// failures.
    pub fn of_run(command: &mut Command, what: &str) -> ResultLine {
        let output = command.output().expect("the run starts");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{what} failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        ResultLine::find(&stdout, what)
    }

    /// The line in `stdout`; a test failure naming `what` ran when there is none.
    pub fn find(stdout: &str, what: &str) -> ResultLine {
        let line = stdout
            .lines()
            .find(|l| l.starts_with("RESULT "))
            .unwrap_or_else(|| panic!("{what} printed no result: {stdout}"));
        ResultLine(line.to_owned())
    }

    /// The number after `key=`; a test failure when there is none.
    pub fn value(&self, key: &str) -> u64 {
        self.0
            .split(' ')
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {}", self.0))
    }
}
