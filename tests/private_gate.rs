//! `span_profiler::__private` (test-only internals) is closed to every dependent that does
//! not opt in with the hidden `__internal` feature: a crate outside this workspace that
//! names it fails to compile, and compiles once it enables the feature.
//!
//! The outside crate is checked with `cargo check --offline` in its own target directory
//! under `CARGO_TARGET_TMPDIR` (kept between runs; the first run checks the dependencies,
//! about a minute). It depends on span-profiler without default features: the gate is
//! `cfg(feature = "__internal")` alone, whatever else is on, and the default features
//! would add hyper and rustls to check from scratch. The same crate with
//! `default-features` removed from its manifest fails and compiles the same way.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes the outside crate: a library naming `__private`, with a feature `internal`
/// that opts in.
fn outside_crate(root: &Path) -> PathBuf {
    let dir = root.join("private-gate");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        r#"[package]
name = "private-gate-outside"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
span-profiler = {{ path = {:?}, default-features = false }}

[features]
internal = ["span-profiler/__internal"]
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(
        dir.join("src/lib.rs"),
        "pub fn slot() -> u64 {\n    span_profiler::__private::current_label_id()\n}\n",
    )
    .unwrap();
    // The workspace's lock file: the same versions, all already downloaded.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
        dir.join("Cargo.lock"),
    )
    .unwrap();
    dir
}

fn check(dir: &Path, features: &[&str]) -> Output {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(dir)
        .args(["check", "--offline", "--quiet", "--target-dir"])
        .arg(dir.join("target"))
        // The outer build's flags (e.g. `--cfg tokio_unstable`) are not this crate's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for f in features {
        cmd.args(["--features", f]);
    }
    cmd.output().expect("cargo runs")
}

#[test]
fn an_outside_crate_reaches_private_only_when_it_opts_in() {
    let dir = outside_crate(Path::new(env!("CARGO_TARGET_TMPDIR")));

    let closed = check(&dir, &[]);
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(!closed.status.success(), "compiled without opting in");
    assert!(
        stderr.contains("__private") && stderr.contains("__internal"),
        "fails for the gate, not for something else:\n{stderr}"
    );

    let open = check(&dir, &["internal"]);
    assert!(
        open.status.success(),
        "opting in must compile:\n{}",
        String::from_utf8_lossy(&open.stderr)
    );
}
