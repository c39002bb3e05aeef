//! No allocation in the handler, proof 2 of 2: disassemble the SIGPROF handler as built
//! for release (debug assertions and overflow checks off) and everything it calls, and
//! fail on any call to an allocator, `pthread_*`, `__tls_get_addr` (a thread-local that
//! is not in static TLS), `dl_iterate_phdr`, any `_Unwind_*` function, panicking or
//! formatting code, or any call through a register. The handler's default unwinder is
//! the DWARF one, so its walk over the published tables is part of what is checked.
//!
//! The test builds a tiny probe program that links the crate (without default features,
//! so the build stays small) in its own target directory, runs it once, and reads
//! `objdump -d -C` of the linked executable: only the linked program shows whether the
//! linker relaxed thread-local accesses to static TLS.
//!
//! Needs `objdump` (Debian `binutils`); fails when it is missing.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;

const HANDLER: &str = "span_profiler::sampler::linux::handler::on_sigprof";

/// Calls to these (C symbols, compared without `@version`) are forbidden.
const FORBIDDEN_C: &[&str] = &[
    "malloc",
    "calloc",
    "realloc",
    "free",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
    "__tls_get_addr",
    "dl_iterate_phdr",
    "pthread_getattr_np",
    "backtrace",
    "_Unwind_Backtrace",
];
/// Calls to symbols containing these are forbidden.
const FORBIDDEN_PARTS: &[&str] = &[
    "pthread_",
    "core::panicking",
    "std::panicking",
    "core::fmt",
    "alloc::alloc",
    "alloc::fmt",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "__rdl_alloc",
    "std::sync::",
    "std::io::",
    // Every libgcc / libunwind entry point (`_Unwind_Backtrace`, `_Unwind_Find_FDE`,
    // `_Unwind_FindEnclosingFunction`, ...): the DWARF walk reads only our own tables.
    "_Unwind_",
];

const PROBE_MAIN: &str = r#"
use span_profiler::__private::{Sampler, SamplerConfig};
fn main() {
    let mut sampler = Sampler::start(SamplerConfig { sample_rate_hz: 1000, ..Default::default() })
        .expect("start");
    let mut x = 1u64;
    let mut n = 0;
    // Maintained as the collector does, so this thread's stack bounds get published and
    // later samples are walked (the first ones record only the leaf).
    for _ in 0..12 {
        let tick = std::time::Instant::now();
        while tick.elapsed() < std::time::Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        sampler.maintain();
        sampler.drain(&mut |_| n += 1);
    }
    std::hint::black_box(x);
    let stats = sampler.stop();
    println!("samples {n} dwarf {}", stats.unwound_cfi);
}
"#;

fn build_probe() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sampler-disasm-probe");
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        r#"[package]
name = "sampler-disasm-probe"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
span-profiler = {{ path = {path:?}, default-features = false, features = ["__internal"] }}

# As in release: no debug assertions, no overflow checks.
[profile.release]
debug-assertions = false
overflow-checks = false
debug = "line-tables-only"

[workspace]
"#,
        path = manifest_dir.to_str().unwrap()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), PROBE_MAIN).unwrap();
    // Same dependency versions as the crate's own lock file.
    if !dir.join("Cargo.lock").exists() {
        let _ = std::fs::copy(manifest_dir.join("Cargo.lock"), dir.join("Cargo.lock"));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(dir.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR");
    // The probe is built as users build (no frame-pointer flag) unless RUSTFLAGS says
    // otherwise, as in the frame-pointer pass of CI.
    let status = cmd.status().expect("run cargo");
    assert!(status.success(), "building the probe failed");
    dir.join("target/release/sampler-disasm-probe")
}

/// Where a call or jump goes.
#[derive(Clone, Debug)]
enum Target {
    /// A direct call to an address (with objdump's name for it).
    Direct(u64, String),
    /// A call through a GOT slot (`call *off(%rip)  # slot <...>`).
    Got(u64),
    /// A call through a register: the target cannot be checked.
    Register,
}

struct Function {
    name: String,
    /// Calls and jumps that leave the function: (instruction text, target).
    calls: Vec<(String, Target)>,
    instructions: usize,
}

/// `hex <name>` at the start of `text`.
fn address_and_name(text: &str) -> Option<(u64, String)> {
    let (addr, rest) = text.trim().split_once(" <")?;
    let addr = u64::from_str_radix(addr.trim(), 16).ok()?;
    Some((addr, rest.strip_suffix('>')?.to_string()))
}

/// Parses `objdump -d -C --no-show-raw-insn` output into functions keyed by address
/// (generic instances share demangled names).
fn parse(disasm: &str) -> HashMap<u64, Function> {
    let mut functions = HashMap::new();
    let mut current: Option<(u64, Function)> = None;
    for line in disasm.lines() {
        if let Some((addr, name)) = line.strip_suffix(':').and_then(address_and_name) {
            if let Some((a, f)) = current.take() {
                functions.insert(a, f);
            }
            current = Some((
                addr,
                Function {
                    name,
                    calls: Vec::new(),
                    instructions: 0,
                },
            ));
            continue;
        }
        let Some((_, function)) = current.as_mut() else {
            continue;
        };
        let Some((_, insn)) = line.split_once(":\t") else {
            continue;
        };
        function.instructions += 1;
        let mut words = insn.split_whitespace();
        let mnemonic = words.next().unwrap_or("");
        let is_call = mnemonic.starts_with("call") || mnemonic == "bl" || mnemonic == "blr";
        let is_jump = mnemonic.starts_with('j')
            || mnemonic == "b"
            || mnemonic.starts_with("b.")
            || mnemonic == "br";
        if !is_call && !is_jump {
            continue;
        }
        let operands = insn[mnemonic.len()..].trim();
        let target = if let Some((_, comment)) = operands.split_once('#') {
            // Through memory: `*0x4b65f(%rip)  # 63ca8 <...>`; the slot address decides.
            match address_and_name(comment) {
                Some((slot, _)) if operands.starts_with('*') => Target::Got(slot),
                _ => Target::Register,
            }
        } else if operands.starts_with('*') || mnemonic == "blr" || mnemonic == "br" {
            Target::Register
        } else if let Some((addr, name)) = address_and_name(operands) {
            // Jumps inside the function show as `<this+0x..>`.
            if name.starts_with(&format!("{}+0x", function.name)) || name == function.name {
                continue;
            }
            Target::Direct(addr, name)
        } else {
            continue;
        };
        function.calls.push((insn.to_string(), target));
    }
    if let Some((a, f)) = current {
        functions.insert(a, f);
    }
    functions
}

/// What each GOT slot holds, from `objdump -R`: a symbol (`GLOB_DAT`, `JUMP_SLOT`) or
/// an address in the binary (`RELATIVE`).
fn parse_relocations(text: &str) -> HashMap<u64, Result<String, u64>> {
    let mut slots = HashMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [offset, kind, value] = fields[..] else {
            continue;
        };
        let Ok(offset) = u64::from_str_radix(offset, 16) else {
            continue;
        };
        if kind.ends_with("_RELATIVE") {
            if let Some(addend) = value.strip_prefix("*ABS*+0x") {
                if let Ok(addr) = u64::from_str_radix(addend, 16) {
                    slots.insert(offset, Err(addr));
                }
            }
        } else {
            slots.insert(
                offset,
                Ok(value.split('+').next().unwrap_or(value).to_string()),
            );
        }
    }
    slots
}

fn forbidden(symbol: &str) -> bool {
    let c_name = symbol.split('@').next().unwrap_or(symbol);
    FORBIDDEN_C.contains(&c_name) || FORBIDDEN_PARTS.iter().any(|p| symbol.contains(p))
}

/// Everything reachable from the function named `root`, and the forbidden calls found
/// on the way.
fn check(
    functions: &HashMap<u64, Function>,
    slots: &HashMap<u64, Result<String, u64>>,
    root: &str,
) -> (BTreeSet<String>, Vec<String>) {
    let start = functions
        .iter()
        .filter(|(_, f)| f.name == root)
        .map(|(a, _)| *a)
        .min()
        .unwrap_or_else(|| panic!("`{root}` not found in the probe's disassembly"));
    let mut seen = BTreeSet::from([start]);
    let mut queue = VecDeque::from([start]);
    let mut violations = Vec::new();
    while let Some(addr) = queue.pop_front() {
        let Some(function) = functions.get(&addr) else {
            continue;
        };
        let name = &function.name;
        for (insn, target) in &function.calls {
            let resolved = match target {
                Target::Register => {
                    violations.push(format!("{name}: call through a register: {insn}"));
                    continue;
                }
                Target::Direct(a, n) => Err((*a, n.clone())),
                Target::Got(slot) => match slots.get(slot) {
                    Some(Ok(symbol)) => Ok(symbol.clone()),
                    Some(Err(a)) => match functions.get(a) {
                        Some(f) => Err((*a, f.name.clone())),
                        None => {
                            violations.push(format!("{name}: GOT call to unknown {a:#x}: {insn}"));
                            continue;
                        }
                    },
                    None => {
                        violations.push(format!("{name}: unresolved GOT slot: {insn}"));
                        continue;
                    }
                },
            };
            match resolved {
                // A symbol resolved by the dynamic linker (libc): allowed unless listed.
                Ok(symbol) => {
                    if forbidden(&symbol) {
                        violations.push(format!("{name}: calls {symbol}"));
                    }
                }
                Err((a, n)) => {
                    if forbidden(&n) {
                        violations.push(format!("{name}: calls {n}"));
                    } else if n.ends_with("@plt") {
                        // A PLT stub: its name is the libc symbol, checked above.
                    } else if functions.contains_key(&a) && seen.insert(a) {
                        queue.push_back(a);
                    } else if !functions.contains_key(&a) {
                        violations.push(format!("{name}: call into the middle of {n}: {insn}"));
                    }
                }
            }
        }
    }
    let names = seen.iter().map(|a| functions[a].name.clone()).collect();
    (names, violations)
}

#[test]
fn the_built_handler_and_its_callees_never_allocate_lock_panic_or_use_dynamic_tls() {
    let objdump_ok = Command::new("objdump")
        .arg("--version")
        .output()
        .map(|o| o.status.success());
    assert!(
        matches!(objdump_ok, Ok(true)),
        "objdump is missing: install binutils (`apt-get install binutils`)"
    );
    let probe = build_probe();
    let run = Command::new(&probe).output().expect("run the probe");
    assert!(
        run.status.success(),
        "the probe failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    // The probe's samples went through the DWARF walk (the default unwinder), so the
    // code checked below is the code that ran.
    let stdout = String::from_utf8_lossy(&run.stdout);
    let dwarf: u64 = stdout
        .split_whitespace()
        .skip_while(|w| *w != "dwarf")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dwarf > 0, "no sample was unwound by CFI: {stdout}");

    let out = Command::new("objdump")
        .args(["-d", "-C", "--no-show-raw-insn"])
        .arg(&probe)
        .output()
        .expect("run objdump");
    assert!(out.status.success());
    let functions = parse(&String::from_utf8_lossy(&out.stdout));
    let relocs = Command::new("objdump")
        .arg("-R")
        .arg(&probe)
        .output()
        .expect("objdump -R");
    assert!(relocs.status.success());
    let slots = parse_relocations(&String::from_utf8_lossy(&relocs.stdout));

    let (reached, violations) = check(&functions, &slots, HANDLER);
    let handler_size: usize = functions
        .values()
        .filter(|f| reached.contains(&f.name))
        .map(|f| f.instructions)
        .sum();
    eprintln!(
        "handler: {} functions, {handler_size} instructions: {reached:#?}",
        reached.len()
    );
    assert!(
        handler_size > 50,
        "implausibly small handler ({handler_size} instructions)"
    );
    assert!(
        violations.is_empty(),
        "forbidden calls in the handler:\n{}",
        violations.join("\n")
    );

    // The checker itself finds such calls where they exist: `Sampler::start` allocates.
    let (_, start_violations) = check(
        &functions,
        &slots,
        "span_profiler::sampler::linux::session::Sampler::start",
    );
    assert!(
        start_violations
            .iter()
            .any(|v| v.contains("alloc") || v.contains("malloc")),
        "the checker missed allocations in Sampler::start: {start_violations:#?}"
    );
}
