//! [`Folding`]: the runtime plumbing of a stack (Tokio's worker, hyper, tower, axum, the
//! futures that wrap a handler) drawn as one frame per crate.

/// The crates whose frames [`Folding::runtime`] folds: async runtimes, HTTP and RPC
/// stacks, future combinators, instrumentation, Rust's standard library and this crate.
/// A trailing `*` matches any suffix; `-` and `_` are the same.
pub const DEFAULT_RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "h2",
    "tower",
    "tower-http",
    "axum",
    "axum-core",
    "tonic",
    "futures-*",
    "pin-project",
    "pin-project-lite",
    "tracing",
    "opentelemetry*",
    "core",
    "alloc",
    "std",
    "span_profiler",
];

/// Which frames of a flame graph are folded: on the root side of each stack, the frames
/// of the listed crates before the first frame of any other crate (the application)
/// become one frame per crate, named `[crate]`, in the order the crates first appear.
/// Frames of no recognisable crate (C functions such as `start_thread`) stay as they are;
/// stacks without an application frame are drawn unchanged, and so is everything above
/// the first application frame. Only the drawing changes: profiles are never modified.
///
/// ```
/// use span_profiler::flamegraph::{FlameGraph, Folding};
///
/// let graph = FlameGraph::new().fold(Folding::runtime());
/// let graph = FlameGraph::new().fold(Folding::runtime().with_crate("actix-*"));
/// let graph = FlameGraph::new().fold(Folding::crates(["tokio", "hyper"]));
/// # let _ = graph;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folding {
    /// Normalised patterns (`_` for `-`), a trailing `*` kept.
    crates: Vec<String>,
}

impl Folding {
    /// Folds the crates of [`DEFAULT_RUNTIME_CRATES`].
    pub fn runtime() -> Self {
        Self::crates(DEFAULT_RUNTIME_CRATES.iter().copied())
    }

    /// Folds exactly these crates (a trailing `*` matches any suffix).
    pub fn crates<I, S>(crates: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            crates: crates
                .into_iter()
                .map(|c| c.as_ref().replace('-', "_"))
                .collect(),
        }
    }

    /// Also folds `name` (a trailing `*` matches any suffix).
    pub fn with_crate(mut self, name: impl AsRef<str>) -> Self {
        self.crates.push(name.as_ref().replace('-', "_"));
        self
    }

    fn folds(&self, krate: &str) -> bool {
        self.crates
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => krate.starts_with(prefix),
                None => pattern == krate,
            })
    }

    /// `frames` (root first) with the runtime prefix folded; `None` when nothing changes.
    pub(crate) fn apply(&self, frames: &[&str]) -> Option<Vec<String>> {
        let first_app = frames
            .iter()
            .position(|name| crate_of(name).is_some_and(|c| !self.folds(c)))?;
        let mut out: Vec<String> = Vec::with_capacity(frames.len());
        let mut seen: Vec<&str> = Vec::new();
        for name in &frames[..first_app] {
            match crate_of(name) {
                Some(krate) => {
                    if !seen.contains(&krate) {
                        seen.push(krate);
                        out.push(format!("[{krate}]"));
                    }
                }
                None => out.push((*name).to_owned()),
            }
        }
        if out.len() == first_app {
            return None;
        }
        out.extend(frames[first_app..].iter().map(|s| (*s).to_owned()));
        Some(out)
    }
}

impl Default for Folding {
    /// [`Folding::runtime`].
    fn default() -> Self {
        Self::runtime()
    }
}

/// The crate a function name belongs to: its first path segment, or for
/// `<Type as Trait>::f` and `<Type>::f` the type's first segment. `None` for names
/// without a path (`start_thread`, `[libc.so.6+0x1234]`, `?`).
pub(crate) fn crate_of(name: &str) -> Option<&str> {
    let mut rest = name;
    loop {
        rest = rest.trim_start_matches(['<', '&', '*', '(', '[', ' ']);
        let stripped = ["mut ", "const ", "dyn ", "impl "]
            .iter()
            .find_map(|p| rest.strip_prefix(p));
        match stripped {
            Some(s) => rest = s,
            None => break,
        }
    }
    let krate = rest.find("::").map(|end| &rest[..end]);
    match krate {
        Some(k) if !k.is_empty() && k.chars().all(|c| c.is_alphanumeric() || c == '_') => Some(k),
        // `<F as core::ops::function::FnOnce>::call_once`: the trait's crate.
        _ => {
            let (_, after) = rest.split_once(" as ")?;
            crate_of(after)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crates_are_read_from_paths_and_qualified_paths() {
        assert_eq!(crate_of("tokio::runtime::task::raw::poll"), Some("tokio"));
        assert_eq!(
            crate_of(
                "<axum::handler::future::IntoServiceFuture as core::future::future::Future>::poll"
            ),
            Some("axum")
        );
        assert_eq!(
            crate_of("<&mut F as core::ops::function::FnOnce>::call_once"),
            Some("core")
        );
        assert_eq!(crate_of("<alloc::vec::Vec>::push"), Some("alloc"));
        assert_eq!(crate_of("start_thread"), None);
        assert_eq!(crate_of("[libc.so.6+0x1234]"), None);
    }

    #[test]
    fn the_runtime_prefix_folds_to_one_frame_per_crate_and_the_rest_stays() {
        let stack = [
            "clone3",
            "start_thread",
            "std::sys::thread::unix::Thread::new::thread_start",
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "tokio::runtime::task::raw::poll",
            "<hyper::proto::h1::dispatch::Dispatcher as core::future::future::Future>::poll",
            "tokio::runtime::task::core::Core::poll",
            "<tower::util::map_response::MapResponseFuture as core::future::future::Future>::poll",
            "<axum::handler::future::IntoServiceFuture as core::future::future::Future>::poll",
            "checkout::handlers::report",
            "alloc::vec::Vec::push",
            "tokio::task::spawn",
        ];
        let folded = Folding::runtime().apply(&stack).expect("something folds");
        assert_eq!(
            folded,
            [
                "clone3",
                "start_thread",
                "[std]",
                "[tokio]",
                "[hyper]",
                "[tower]",
                "[axum]",
                "checkout::handlers::report",
                "alloc::vec::Vec::push",
                "tokio::task::spawn",
            ]
        );
    }

    #[test]
    fn stacks_without_an_application_frame_stay_unchanged() {
        let stack = [
            "start_thread",
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "tokio::runtime::park::Parker::park",
        ];
        assert_eq!(Folding::runtime().apply(&stack), None);
    }

    #[test]
    fn patterns_match_prefixes_and_dashes_equal_underscores() {
        let f = Folding::crates(["futures-*", "hyper-util"]);
        assert!(f.folds("futures_util"));
        assert!(f.folds("hyper_util"));
        assert!(!f.folds("hyper"));
        assert!(Folding::runtime().folds("opentelemetry_sdk"));
        assert!(Folding::crates(["tokio"]).with_crate("demo").folds("demo"));
    }
}
