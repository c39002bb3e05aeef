//! External tools the tests drive (Debian's `golang-go` for `go tool pprof`).

use std::path::PathBuf;

/// `go` when it is installed; `None` (after printing why) when it is not and tools are
/// not required; a test failure when `SPAN_PROFILER_REQUIRE_TOOLS=1` (as in CI).
pub fn go() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("go"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let required = std::env::var("SPAN_PROFILER_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "`go` is not on PATH and SPAN_PROFILER_REQUIRE_TOOLS=1: install golang-go"
        );
        eprintln!("skipped: `go` is not on PATH (install golang-go, or set SPAN_PROFILER_REQUIRE_TOOLS=1 to fail)");
    }
    found
}
