//! Readable function names: demangling, generic arguments removed, and a module path
//! for inlined functions that debug info names only by their short name.
//!
//! - A non-inlined frame is named after its symbol-table entry, demangled without the
//!   hash: `tokio::runtime::task::raw::poll`.
//! - An inlined frame takes its DWARF linkage name when the debug info has one (full
//!   debug info). A `line-tables-only` build only records the short name (`poll`,
//!   `{closure#0}`); the path is then derived from the function's source file: the crate
//!   from the registry directory (`.../tokio-1.48.0/src/...` gives `tokio`) or from the
//!   directory holding `src/` (a package root, or `library/core` of the standard
//!   library), the module from the path below `src/` (`runtime/task/raw.rs` gives
//!   `runtime::task::raw`; `lib.rs`, `main.rs` and `mod.rs` add nothing). So `poll` in
//!   `tokio-1.48.0/src/runtime/task/raw.rs` becomes `tokio::runtime::task::raw::poll`:
//!   the module path, which for a method differs from the type path the symbol table
//!   would show (`tokio::runtime::task::raw::RawTask::poll`).
//! - The readable name carries no generic arguments: `Foo<T>::bar` reads `Foo::bar`,
//!   `<Foo<T> as Trait<U>>::poll` reads `<Foo as Trait>::poll`. The full name stays in
//!   the profile's `system_name`.

/// `raw` demangled without its hash when it is a Rust (or C++-style legacy) symbol,
/// unchanged otherwise. Generic arguments are kept.
pub(crate) fn demangle(raw: &str) -> String {
    match rustc_demangle::try_demangle(raw) {
        Ok(d) => format!("{d:#}"),
        Err(_) => raw.to_owned(),
    }
}

/// `name` without generic argument lists; qualified paths (`<A as B>::f`, `<A>::f`) keep
/// their angle brackets. Unbalanced input never panics: an unclosed list is dropped to
/// the end.
pub(crate) fn without_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    // Depth inside a generic argument list being skipped (0: copying).
    let mut skip = 0usize;
    let mut prev = '\0';
    for c in name.chars() {
        if skip > 0 {
            match c {
                '<' => skip += 1,
                // `->` in `fn(A) -> B` is no closing bracket.
                '>' if prev != '-' => skip -= 1,
                _ => {}
            }
            prev = c;
            continue;
        }
        if c == '<' && opens_generics(&out) {
            // A turbofish: `f::<T>` reads `f`.
            if out.ends_with("::") {
                out.truncate(out.len() - 2);
            }
            skip = 1;
            prev = c;
            continue;
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Whether a `<` following `before` opens generic arguments (after a name or `::`) rather
/// than a qualified path (at the start, or after `<`, `(`, `&`, `*`, `[`, `,` or a space).
fn opens_generics(before: &str) -> bool {
    match before.chars().next_back() {
        Some(c) => c.is_alphanumeric() || c == '_' || c == ':' || c == '}',
        None => false,
    }
}

/// `crate::module` derived from a source file path, `None` when the path says nothing
/// usable (empty, or only a file name).
///
/// See the module docs for the rules.
pub(crate) fn module_path_of_file(file: &str) -> Option<String> {
    let parts: Vec<&str> = file
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let (last, dirs) = parts.split_last()?;
    let stem = last.strip_suffix(".rs").unwrap_or(last);
    // The crate is the directory holding the last `src` (a package root, a registry
    // directory `name-1.2.3`, or `library/core` of the standard library); without a `src`,
    // the file's own directory.
    let (krate, modules): (&str, &[&str]) = match dirs.iter().rposition(|d| *d == "src") {
        Some(i) if i > 0 => (dirs[i - 1], &dirs[i + 1..]),
        _ => (dirs.last()?, &[]),
    };
    let mut path = crate_name(krate);
    if path.is_empty() {
        return None;
    }
    for m in modules {
        path.push_str("::");
        path.push_str(m);
    }
    if !matches!(stem, "lib" | "main" | "mod") {
        path.push_str("::");
        path.push_str(stem);
    }
    Some(path)
}

/// A directory name as a crate name: a registry version suffix removed
/// (`hyper-util-0.1.11` is `hyper_util`), `-` as `_`.
fn crate_name(dir: &str) -> String {
    let bytes = dir.as_bytes();
    let end = (1..bytes.len())
        .find(|&i| bytes[i - 1] == b'-' && bytes[i].is_ascii_digit())
        .map_or(dir.len(), |i| i - 1);
    dir[..end].replace('-', "_")
}

/// The readable name of an inlined frame: its DWARF `linkage` name (demangled) when there
/// is one, else its short `name` qualified by the module path of `file` unless it is
/// already qualified. Generic arguments are removed either way.
pub(crate) fn inlined_name(linkage: Option<&str>, name: &str, file: &str) -> String {
    if let Some(linkage) = linkage {
        return without_generics(&demangle(linkage));
    }
    let short = without_generics(name);
    if short.contains("::") {
        return short;
    }
    match module_path_of_file(file) {
        Some(module) => format!("{module}::{short}"),
        None => short,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_arguments_are_removed_and_qualified_paths_kept() {
        let cases = [
            ("tokio::runtime::task::raw::poll", "tokio::runtime::task::raw::poll"),
            (
                "<axum::handler::future::IntoServiceFuture<F> as core::future::future::Future>::poll",
                "<axum::handler::future::IntoServiceFuture as core::future::future::Future>::poll",
            ),
            (
                "<alloc::vec::Vec<T, A>>::push",
                "<alloc::vec::Vec>::push",
            ),
            (
                "core::ptr::drop_in_place::<alloc::boxed::Box<dyn core::future::future::Future<Output = ()> + Send>>",
                "core::ptr::drop_in_place",
            ),
            (
                "<&mut F as core::ops::function::FnOnce<(A,)>>::call_once",
                "<&mut F as core::ops::function::FnOnce>::call_once",
            ),
            (
                "poll<alloc::boxed::Box<dyn core::ops::function::Fn(u8) -> u32>, core::result::Result<(), E>>",
                "poll",
            ),
            (
                "<[T] as core::slice::sort::stable::BufGuard<T>>::with_capacity",
                "<[T] as core::slice::sort::stable::BufGuard>::with_capacity",
            ),
            ("tokio::runtime::task::harness::{closure#0}", "tokio::runtime::task::harness::{closure#0}"),
            ("unclosed<alloc::vec::Vec<u8", "unclosed"),
        ];
        for (input, expected) in cases {
            assert_eq!(without_generics(input), expected, "{input}");
        }
    }

    #[test]
    fn no_readable_name_keeps_part_of_a_generic_list() {
        let input = "<futures_util::future::future::Map<Fut, F> as core::future::future::Future>::poll::<alloc::string::String>";
        let out = without_generics(input);
        assert_eq!(out.matches('<').count(), out.matches('>').count(), "{out}");
        assert!(!out.contains(','), "{out}");
    }

    #[test]
    fn registry_files_give_the_crate_and_module_path() {
        assert_eq!(
            module_path_of_file(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/task/raw.rs"
            )
            .as_deref(),
            Some("tokio::runtime::task::raw")
        );
        assert_eq!(
            module_path_of_file(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.11/src/client/legacy/mod.rs"
            )
            .as_deref(),
            Some("hyper_util::client::legacy")
        );
        assert_eq!(
            module_path_of_file(
                "/rustc/17067e9ac6d7e98f18d4a4b1c2d8e6e6d2a8f7c1/library/core/src/future/future.rs"
            )
            .as_deref(),
            Some("core::future::future")
        );
    }

    #[test]
    fn package_roots_and_loose_files_give_a_path_too() {
        assert_eq!(
            module_path_of_file("/home/me/checkout-service/src/lib.rs").as_deref(),
            Some("checkout_service")
        );
        assert_eq!(
            module_path_of_file("/home/me/app/examples/demo/report.rs").as_deref(),
            Some("demo::report")
        );
        assert_eq!(module_path_of_file("report.rs"), None);
        assert_eq!(module_path_of_file(""), None);
    }

    #[test]
    fn inlined_frames_prefer_the_linkage_name_then_the_file_path() {
        assert_eq!(
            inlined_name(
                Some("_ZN5tokio7runtime4task3raw4poll17h0123456789abcdefE"),
                "poll",
                "/x/tokio-1.48.0/src/runtime/task/raw.rs"
            ),
            "tokio::runtime::task::raw::poll"
        );
        assert_eq!(
            inlined_name(
                None,
                "poll<F>",
                "/x/tokio-1.48.0/src/runtime/task/harness.rs"
            ),
            "tokio::runtime::task::harness::poll"
        );
        assert_eq!(inlined_name(None, "{closure#0}", ""), "{closure#0}");
        assert_eq!(
            inlined_name(None, "core::ptr::drop_in_place<u8>", "/anything/src/x.rs"),
            "core::ptr::drop_in_place"
        );
    }
}
