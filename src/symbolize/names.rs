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
                // `->` in `fn(A) -> B` is no closing bracket, nor its legacy-mangled
                // form `.>` (`fn(A) .> B`).
                '>' if !is_arrow_start(prev) => skip -= 1,
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

/// Whether `c` before a `>` makes it an arrow, not a closing bracket: `-` of `->`, or `.`
/// of `.>`, as legacy (`_ZN`) symbols spell `->` once demangled. No generic list ends in
/// `.`, so this never keeps a real closing bracket open.
fn is_arrow_start(c: char) -> bool {
    c == '-' || c == '.'
}

/// Whether a `<` following `before` opens generic arguments (after a name or `::`) rather
/// than a qualified path (at the start, or after `<`, `(`, `&`, `*`, `[`, `,` or a space).
fn opens_generics(before: &str) -> bool {
    match before.chars().next_back() {
        Some(c) => c.is_alphanumeric() || c == '_' || c == ':' || c == '}',
        None => false,
    }
}

/// Where a source file lies: its package directory, which of the package's crates it
/// belongs to, and its module path inside that crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourcePlace<'a> {
    /// The directory holding `src` (`None` for a file outside any `src`).
    package_dir: Option<&'a str>,
    /// The crate's name as the path alone gives it (see [`crate_of_directory`]), or the
    /// binary's for `src/bin/x.rs`.
    path_crate: String,
    /// The path names the crate exactly: a registry package, or a binary of `src/bin`.
    exact: bool,
    /// The binary of `src/bin/<name>` the file belongs to; `None` for the library and
    /// `src/main.rs` and its modules.
    bin: Option<&'a str>,
    /// The file is `src/main.rs` itself (the crate named after the package, never a
    /// renamed library).
    main: bool,
    /// Modules below the crate root, outermost first.
    modules: Vec<&'a str>,
}

impl SourcePlace<'_> {
    /// Files of one crate have equal keys (the library, `src/main.rs` and their modules
    /// share one: a package's library and binary crates are usually named alike).
    fn crate_key(&self) -> (Option<&str>, Option<&str>) {
        (self.package_dir, self.bin)
    }
}

/// Splits a source path (see the module docs for the rules).
fn source_place(file: &str) -> Option<SourcePlace<'_>> {
    let parts: Vec<(usize, &str)> = file
        .split('/')
        .scan(0usize, |at, p| {
            let start = *at;
            *at += p.len() + 1;
            Some((start, p))
        })
        .filter(|(_, p)| !p.is_empty() && *p != ".")
        .collect();
    let ((_, last), dirs) = parts.split_last()?;
    let stem = last.strip_suffix(".rs").unwrap_or(last);
    let names: Vec<&str> = dirs.iter().map(|(_, d)| *d).collect();
    let Some(i) = names.iter().rposition(|d| *d == "src").filter(|&i| i > 0) else {
        // Outside any `src` (`examples/demo/report.rs`): the file's own directory.
        let mut modules = Vec::new();
        if !matches!(stem, "lib" | "main" | "mod") {
            modules.push(stem);
        }
        return Some(SourcePlace {
            package_dir: None,
            path_crate: crate_of_directory(names.last()?),
            exact: false,
            bin: None,
            main: false,
            modules,
        });
    };
    let (src_start, _) = dirs[i];
    let package_dir = &file[..src_start.saturating_sub(1)];
    // `.../registry/src/<index>/<name>-<version>/src/...`
    let registry = i >= 4 && names[i - 3] == "src" && names[i - 4] == "registry";
    let mut below: Vec<&str> = names[i + 1..].to_vec();
    let mut bin = None;
    if below.first() == Some(&"bin") {
        below.remove(0);
        bin = Some(if below.is_empty() {
            stem
        } else {
            below.remove(0)
        });
    }
    let at_root = below.is_empty();
    let mut modules = below;
    if !(matches!(stem, "lib" | "main" | "mod") || bin == Some(stem) && at_root) {
        modules.push(stem);
    }
    Some(SourcePlace {
        package_dir: Some(package_dir),
        path_crate: match bin {
            Some(b) => b.replace('-', "_"),
            None => crate_of_directory(names[i - 1]),
        },
        exact: registry || bin.is_some(),
        bin,
        main: at_root && bin.is_none() && stem == "main",
        modules,
    })
}

/// A directory name as a crate name: a version suffix removed (`hyper-util-0.1.11` is
/// `hyper_util`), `-` as `_`.
fn crate_of_directory(dir: &str) -> String {
    let bytes = dir.as_bytes();
    let end = (1..bytes.len())
        .find(|&i| bytes[i - 1] == b'-' && bytes[i].is_ascii_digit())
        .map_or(dir.len(), |i| i - 1);
    dir[..end].replace('-', "_")
}

/// The crate names a package's `Cargo.toml` declares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ManifestNames {
    /// `[package] name`, `-` as `_`.
    package: Option<String>,
    /// `[lib] name`, `-` as `_`.
    lib: Option<String>,
}

/// Reads `name = "..."` of `[package]` and `[lib]` from a manifest's text. Only what this
/// needs of TOML: section headers and basic or literal strings on one line; anything else
/// is skipped, never an error.
fn manifest_names(text: &str) -> ManifestNames {
    let mut out = ManifestNames::default();
    let mut section = "";
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.trim_matches(|c| c == '[' || c == ']').trim();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() != "name" {
            continue;
        }
        let value = value.trim();
        let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(name) = value[1..].split(quote).next() else {
            continue;
        };
        let name = Some(name.trim().replace('-', "_")).filter(|n| !n.is_empty());
        match section {
            "package" if out.package.is_none() => out.package = name,
            "lib" if out.lib.is_none() => out.lib = name,
            _ => {}
        }
    }
    out
}

/// Crate names read from `Cargo.toml` files on disk, cached per package directory (a
/// directory without a readable manifest is cached as such and never read again).
#[derive(Debug, Default)]
pub(crate) struct CrateNames {
    by_dir: std::collections::HashMap<Box<str>, Option<ManifestNames>>,
    bytes: usize,
}

impl CrateNames {
    /// Heap bytes held (an estimate: the map's slots and strings).
    pub(crate) fn heap_bytes(&self) -> usize {
        crate::symbolize::table_bytes::<(Box<str>, Option<ManifestNames>)>(self.by_dir.capacity())
            + self.bytes
    }

    fn manifest(&mut self, package_dir: &str) -> Option<&ManifestNames> {
        if !self.by_dir.contains_key(package_dir) {
            let path = std::path::Path::new(package_dir).join("Cargo.toml");
            // A file that cannot be read (a build machine's path, no sources deployed)
            // is no error: the directory's name is used.
            let names = std::fs::read_to_string(path)
                .ok()
                .map(|text| manifest_names(&text));
            self.bytes += package_dir.len()
                + names.as_ref().map_or(0, |n| {
                    n.package.as_ref().map_or(0, String::len)
                        + n.lib.as_ref().map_or(0, String::len)
                });
            self.by_dir.insert(package_dir.into(), names);
        }
        self.by_dir.get(package_dir)?.as_ref()
    }

    /// The crate of `place`: the path's when it is exact, else the manifest's `[lib]`
    /// (not for `src/main.rs`) or `[package]` name, else the directory's name.
    fn crate_of(&mut self, place: &SourcePlace<'_>) -> String {
        if place.exact {
            return place.path_crate.clone();
        }
        let from_manifest = place.package_dir.and_then(|dir| {
            let names = self.manifest(dir)?;
            let lib = if place.main { None } else { names.lib.clone() };
            lib.or_else(|| names.package.clone())
        });
        from_manifest.unwrap_or_else(|| place.path_crate.clone())
    }
}

/// What the enclosing (non-inlined) function says about the crate of code in its own
/// package: its symbol's first path segment, and its source file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CrateHint<'a> {
    /// The enclosing function's readable name (`shop::main::{closure#0}`).
    pub(crate) function: &'a str,
    /// Its source file.
    pub(crate) file: &'a str,
}

impl CrateHint<'_> {
    /// The crate the hint gives for `place`: the function's crate when its file is in the
    /// same crate of the same package and its name is a plain path (`a::b::f`; for
    /// `<A as B>::f` the impl's crate is not known from the name).
    fn crate_for(&self, place: &SourcePlace<'_>) -> Option<String> {
        place.package_dir?;
        let own = source_place(self.file)?;
        if own.crate_key() != place.crate_key() {
            return None;
        }
        let (first, _) = self.function.split_once("::")?;
        let ident = !first.is_empty()
            && !first.starts_with(|c: char| c.is_ascii_digit())
            && first.chars().all(|c| c.is_alphanumeric() || c == '_');
        ident.then(|| first.to_owned())
    }
}

/// `crate::module` derived from a source file path, `None` when the path says nothing
/// usable (empty, or only a file name).
///
/// See the module docs for the rules.
pub(crate) fn module_path_of_file(
    file: &str,
    hint: Option<CrateHint<'_>>,
    crates: &mut CrateNames,
) -> Option<String> {
    let place = source_place(file)?;
    let mut path = match hint.and_then(|h| h.crate_for(&place)) {
        Some(krate) => krate,
        None => crates.crate_of(&place),
    };
    if path.is_empty() {
        return None;
    }
    for m in &place.modules {
        path.push_str("::");
        path.push_str(m);
    }
    Some(path)
}

/// The readable name of an inlined frame: its DWARF `linkage` name (demangled) when there
/// is one, else its short `name` qualified by the module path of `file` unless it is
/// already qualified or a symbol-style name starting with `__`. Generic arguments are
/// removed either way.
pub(crate) fn inlined_name(
    linkage: Option<&str>,
    name: &str,
    file: &str,
    hint: Option<CrateHint<'_>>,
    crates: &mut CrateNames,
) -> String {
    if let Some(linkage) = linkage {
        return without_generics(&demangle(linkage));
    }
    let short = without_generics(name);
    // Already a path; or a symbol-style name (`__rust_alloc`, `__rdl_alloc`: the
    // allocator shims the compiler makes), which no module defines.
    if short.contains("::") || short.starts_with("__") {
        return short;
    }
    match module_path_of_file(file, hint, crates) {
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
            // A legacy symbol demangled: `->` reads `.>`.
            (
                "core::ptr::drop_in_place<futures_util::future::future::Map<core::pin::Pin<alloc::boxed::Box<dyn core::future::future::Future+Output = http::response::Response<axum_core::body::Body>+core::marker::Send>>,fn(http::response::Response<axum_core::body::Body>) .> core::result::Result<http::response::Response<axum_core::body::Body>,core::convert::Infallible>>>",
                "core::ptr::drop_in_place",
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(without_generics(input), expected, "{input}");
        }
    }

    /// Whether `name` closes every angle bracket it opens, in order.
    fn balanced(name: &str) -> bool {
        let mut depth = 0i32;
        let mut prev = ' ';
        for c in name.chars() {
            match c {
                '<' => depth += 1,
                '>' if !is_arrow_start(prev) => depth -= 1,
                _ => {}
            }
            if depth < 0 {
                return false;
            }
            prev = c;
        }
        depth == 0
    }

    #[test]
    fn every_function_symbol_of_this_binary_reads_without_a_cut_generic_list() {
        let exe = std::env::current_exe().unwrap();
        let file = crate::symbolize::objfile::ObjectFile::open(&exe, 0).unwrap();
        let (mut named, mut arrows) = (0, 0);
        for addr in file.function_addresses() {
            let Some(symbol) = file.symbol(addr) else {
                continue;
            };
            let full = demangle(symbol.name);
            let readable = without_generics(&full);
            assert!(balanced(&readable), "{readable}\n  from {full}");
            named += 1;
            arrows += usize::from(full.contains(" .> ") || full.contains(" -> "));
        }
        assert!(named > 1000, "{named} symbols");
        // Names with function types in their generics (the `.>` case) were checked.
        assert!(arrows > 0);
    }

    #[test]
    fn no_readable_name_keeps_part_of_a_generic_list() {
        let input = "<futures_util::future::future::Map<Fut, F> as core::future::future::Future>::poll::<alloc::string::String>";
        let out = without_generics(input);
        assert_eq!(out.matches('<').count(), out.matches('>').count(), "{out}");
        assert!(!out.contains(','), "{out}");
    }

    /// Module path of `file` with no hint and a fresh manifest cache.
    fn module_path(file: &str) -> Option<String> {
        module_path_of_file(file, None, &mut CrateNames::default())
    }

    #[test]
    fn registry_files_give_the_crate_and_module_path() {
        assert_eq!(
            module_path(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/task/raw.rs"
            )
            .as_deref(),
            Some("tokio::runtime::task::raw")
        );
        assert_eq!(
            module_path(
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/hyper-util-0.1.11/src/client/legacy/mod.rs"
            )
            .as_deref(),
            Some("hyper_util::client::legacy")
        );
        assert_eq!(
            module_path(
                "/rustc/17067e9ac6d7e98f18d4a4b1c2d8e6e6d2a8f7c1/library/core/src/future/future.rs"
            )
            .as_deref(),
            Some("core::future::future")
        );
    }

    #[test]
    fn packages_without_a_manifest_on_disk_and_loose_files_use_directory_names() {
        assert_eq!(
            module_path("/nonexistent/home/checkout-service/src/lib.rs").as_deref(),
            Some("checkout_service")
        );
        assert_eq!(
            module_path("/nonexistent/app/examples/demo/report.rs").as_deref(),
            Some("demo::report")
        );
        assert_eq!(module_path("report.rs"), None);
        assert_eq!(module_path(""), None);
    }

    #[test]
    fn main_lib_mod_and_bin_files_follow_the_crate_layout() {
        let cases = [
            ("/nonexistent/shop/src/main.rs", "shop"),
            ("/nonexistent/shop/src/lib.rs", "shop"),
            ("/nonexistent/shop/src/routes.rs", "shop::routes"),
            ("/nonexistent/shop/src/a/mod.rs", "shop::a"),
            ("/nonexistent/shop/src/a/b.rs", "shop::a::b"),
            ("/nonexistent/shop/src/bin/load-gen.rs", "load_gen"),
            ("/nonexistent/shop/src/bin/admin/main.rs", "admin"),
            ("/nonexistent/shop/src/bin/admin/cli.rs", "admin::cli"),
        ];
        for (file, expected) in cases {
            assert_eq!(module_path(file).as_deref(), Some(expected), "{file}");
        }
    }

    /// A package directory named `app` whose manifest names it otherwise, removed on drop.
    struct Package(std::path::PathBuf);

    impl Package {
        fn new(tag: &str, manifest: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("span-profiler-names-{tag}-{}", std::process::id()))
                .join("app");
            std::fs::create_dir_all(dir.join("src")).unwrap();
            std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
            Self(dir)
        }

        fn file(&self, below_src: &str) -> String {
            format!("{}/src/{below_src}", self.0.display())
        }
    }

    impl Drop for Package {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn a_local_package_is_named_by_its_manifest_not_its_directory() {
        let pkg = Package::new(
            "package",
            "# the shop\n[package]\nname = \"shop-service\" # a comment\nversion = \"0.1.0\"\n\n[dependencies]\nname = \"not-this\"\n",
        );
        let mut crates = CrateNames::default();
        assert_eq!(
            module_path_of_file(&pkg.file("main.rs"), None, &mut crates).as_deref(),
            Some("shop_service")
        );
        assert_eq!(
            module_path_of_file(&pkg.file("http/routes.rs"), None, &mut crates).as_deref(),
            Some("shop_service::http::routes")
        );
        // Read once per directory: the cached name stays when the file goes.
        std::fs::remove_file(pkg.0.join("Cargo.toml")).unwrap();
        assert_eq!(
            module_path_of_file(&pkg.file("lib.rs"), None, &mut crates).as_deref(),
            Some("shop_service")
        );
        assert!(crates.heap_bytes() > 0);
    }

    #[test]
    fn a_renamed_library_names_its_modules_and_main_rs_keeps_the_package_name() {
        let pkg = Package::new(
            "lib",
            "[package]\nname = 'shop'\n\n[lib]\nname = \"shop_core\"\npath = \"src/lib.rs\"\n",
        );
        let mut crates = CrateNames::default();
        assert_eq!(
            module_path_of_file(&pkg.file("db.rs"), None, &mut crates).as_deref(),
            Some("shop_core::db")
        );
        assert_eq!(
            module_path_of_file(&pkg.file("main.rs"), None, &mut crates).as_deref(),
            Some("shop")
        );
    }

    #[test]
    fn this_crate_is_named_from_its_own_manifest() {
        let file = format!("{}/src/symbolize/names.rs", env!("CARGO_MANIFEST_DIR"));
        assert_eq!(
            module_path(&file).as_deref(),
            Some("span_profiler::symbolize::names")
        );
    }

    #[test]
    fn the_enclosing_functions_crate_names_inlined_code_of_the_same_crate() {
        let mut crates = CrateNames::default();
        let hint = CrateHint {
            function: "shop::main::{closure#0}",
            file: "/build/app/src/main.rs",
        };
        assert_eq!(
            inlined_name(
                None,
                "list<T>",
                "/build/app/src/http/routes.rs",
                Some(hint),
                &mut crates
            ),
            "shop::http::routes::list"
        );
        assert_eq!(
            inlined_name(
                None,
                "{async_fn#0}",
                "/build/app/src/main.rs",
                Some(hint),
                &mut crates
            ),
            "shop::{async_fn#0}"
        );
        // Another package, or another crate of the package: no hint.
        assert_eq!(
            inlined_name(
                None,
                "get",
                "/build/lib/src/lib.rs",
                Some(hint),
                &mut crates
            ),
            "lib::get"
        );
        assert_eq!(
            inlined_name(
                None,
                "run",
                "/build/app/src/bin/tool.rs",
                Some(hint),
                &mut crates
            ),
            "tool::run"
        );
        // `<A as B>::f` says nothing sure about the impl's crate.
        let qualified = CrateHint {
            function: "<alloc::vec::Vec as shop::Store>::get",
            file: "/build/app/src/store.rs",
        };
        assert_eq!(
            inlined_name(
                None,
                "get",
                "/build/app/src/store.rs",
                Some(qualified),
                &mut crates
            ),
            "app::store::get"
        );
    }

    #[test]
    fn inlined_frames_prefer_the_linkage_name_then_the_file_path() {
        let mut crates = CrateNames::default();
        assert_eq!(
            inlined_name(
                Some("_ZN5tokio7runtime4task3raw4poll17h0123456789abcdefE"),
                "poll",
                "/x/tokio-1.48.0/src/runtime/task/raw.rs",
                None,
                &mut crates,
            ),
            "tokio::runtime::task::raw::poll"
        );
        assert_eq!(
            inlined_name(
                None,
                "poll<F>",
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/tokio-1.48.0/src/runtime/task/harness.rs",
                None,
                &mut crates,
            ),
            "tokio::runtime::task::harness::poll"
        );
        assert_eq!(
            inlined_name(None, "{closure#0}", "", None, &mut crates),
            "{closure#0}"
        );
        assert_eq!(
            inlined_name(
                None,
                "core::ptr::drop_in_place<u8>",
                "/anything/src/x.rs",
                None,
                &mut crates
            ),
            "core::ptr::drop_in_place"
        );
        // The compiler's allocator shims belong to no module, wherever they are inlined.
        assert_eq!(
            inlined_name(
                None,
                "__rust_alloc",
                "/work/shop/src/main.rs",
                None,
                &mut crates
            ),
            "__rust_alloc"
        );
    }

    #[test]
    fn manifest_reading_never_fails_on_odd_text() {
        for text in [
            "",
            "[package",
            "name =",
            "name = \"",
            "[package]\nname = 'x",
            "\u{0}=\u{0}",
        ] {
            let _ = manifest_names(text);
        }
        assert_eq!(manifest_names("[package]\nname = \"\"").package, None);
    }
}
