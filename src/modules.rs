//! The loaded modules (main executable, shared libraries, the vDSO) and their executable
//! segments: the crate's one walker of the dynamic loader's list.
//!
//! [`loaded_modules`] asks the loader with `dl_iterate_phdr` and copies what it needs out
//! of the loader's structures before the callback returns. The sampler uses it to check
//! that the crate is in the main program (static TLS); the symbolizer to map addresses to
//! files (build ids, symbols and DWARF are then read from the files on disk).
//!
//! Never call this from a signal handler: `dl_iterate_phdr` takes the loader's lock and
//! the callback allocates.

use std::ffi::CStr;
use std::ops::ControlFlow;
use std::os::raw::{c_int, c_void};
use std::path::PathBuf;

/// `PT_LOAD` program header type (elf.h).
const PT_LOAD: u32 = 1;
/// `PF_X` segment flag: the segment is executable (elf.h).
const PF_X: u32 = 1;

/// One executable `PT_LOAD` segment, at its run-time address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    /// First byte (load bias + `p_vaddr`).
    pub(crate) start: usize,
    /// One past the last byte (`start + p_memsz`).
    pub(crate) end: usize,
    /// Offset of the segment's first byte in the file (`p_offset`).
    pub(crate) file_offset: u64,
}

/// One loaded ELF object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Module {
    /// The file on disk: `/proc/self/exe` resolved for the main program, the loader's
    /// name for libraries. `None` for objects without a file (the vDSO).
    pub(crate) path: Option<PathBuf>,
    /// What a profile shows as the mapping's file name (the path, or the loader's name).
    pub(crate) name: String,
    /// Whether this is the main program (the loader's first object), where this crate's
    /// `const` thread-locals live in static TLS.
    pub(crate) is_main: bool,
    /// Load bias: run-time address minus the address in the ELF file (`dlpi_addr`).
    pub(crate) bias: usize,
    /// Executable segments, in program-header order.
    pub(crate) segments: Vec<Segment>,
}

impl Module {
    /// Whether `addr` falls into one of this module's executable segments.
    pub(crate) fn segment_of(&self, addr: usize) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|s| s.start <= addr && addr < s.end)
    }
}

/// One object as the dynamic loader lists it, lent to a [`for_each_object`] visitor
/// while the loader's lock is held: its segments stay mapped (a concurrent `dlclose`
/// waits) until the visitor returns.
pub(crate) struct LoadedObject<'a> {
    /// Its program headers.
    pub(crate) phdrs: &'a [libc::Elf64_Phdr],
    /// Its name as the loader has it (empty for the main program).
    pub(crate) name: &'a CStr,
    /// Load bias: run-time address minus the address in the ELF file.
    pub(crate) bias: usize,
    /// The loader's counts of objects added and removed since the process started
    /// (`dlpi_adds`, `dlpi_subs`), when the loader reports them.
    pub(crate) generation: Option<(u64, u64)>,
}

/// Calls `visit` for every loaded object, main program first (the loader's order), with
/// the loader's lock held, until it returns `Break`. The crate's one caller of
/// `dl_iterate_phdr`. Never call it from a signal handler: the loader's lock, and
/// visitors allocate.
pub(crate) fn for_each_object(mut visit: impl FnMut(&LoadedObject<'_>) -> ControlFlow<()>) {
    let mut visit: &mut dyn FnMut(&LoadedObject<'_>) -> ControlFlow<()> = &mut visit;
    // SAFETY: 1. `trampoline` matches the callback type `dl_iterate_phdr` expects.
    //         2. `data` points to `visit`, which outlives the call; the callback is only
    //            invoked during this call, on this thread, and is its only user.
    unsafe {
        libc::dl_iterate_phdr(
            Some(trampoline),
            (&mut visit as *mut &mut dyn FnMut(&LoadedObject<'_>) -> ControlFlow<()>)
                .cast::<c_void>(),
        );
    }
}

/// `dl_iterate_phdr` callback of [`for_each_object`].
///
/// # Safety
/// `info` must point to a valid `dl_phdr_info` of `size` bytes whose `dlpi_phdr` array
/// has `dlpi_phnum` entries, and `data` to the visitor of `for_each_object` (both hold
/// for the loader calling it from there).
unsafe extern "C" fn trampoline(
    info: *mut libc::dl_phdr_info,
    size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info` for the duration of the call.
    let info = unsafe { &*info };
    // SAFETY: `data` is the visitor passed by `for_each_object`, used by no one else
    // during the iteration.
    let visit =
        unsafe { &mut *data.cast::<&mut dyn FnMut(&LoadedObject<'_>) -> ControlFlow<()>>() };
    let name = if info.dlpi_name.is_null() {
        c""
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader,
        // valid during the callback (the borrow ends with it).
        unsafe { CStr::from_ptr(info.dlpi_name) }
    };
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        &[]
    } else {
        // SAFETY: the loader guarantees `dlpi_phdr` points to `dlpi_phnum` program headers
        // that stay mapped while the object is loaded (at least for this callback).
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    // Old loaders pass a shorter struct without the counters.
    let needed = std::mem::offset_of!(libc::dl_phdr_info, dlpi_subs) + 8;
    let object = LoadedObject {
        phdrs,
        name,
        bias: info.dlpi_addr as usize,
        generation: (size >= needed).then_some((info.dlpi_adds, info.dlpi_subs)),
    };
    match visit(&object) {
        ControlFlow::Continue(()) => 0,
        ControlFlow::Break(()) => 1,
    }
}

/// Every module the dynamic loader knows now, main program first (the loader's order).
pub(crate) fn loaded_modules() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    let mut first = true;
    for_each_object(|object| {
        let is_main = std::mem::take(&mut first) && object.name.is_empty();
        if let Some(module) = module_of(object, is_main) {
            out.push(module);
        }
        ControlFlow::Continue(())
    });
    out
}

/// Whether `addr` (code, such as a function's address) is in the main program rather
/// than a shared object. Only there are this crate's `const` thread-locals in static TLS,
/// safe to read from a signal handler.
pub(crate) fn in_main_program(addr: usize) -> bool {
    loaded_modules()
        .iter()
        .any(|m| m.is_main && m.segment_of(addr).is_some())
}

/// What the symbolizer keeps of one object: its file, bias and executable segments
/// (`None` for an object without executable segments).
fn module_of(object: &LoadedObject<'_>, is_main: bool) -> Option<Module> {
    let name = object.name.to_string_lossy().into_owned();
    let bias = object.bias;
    let segments: Vec<Segment> = object
        .phdrs
        .iter()
        .filter(|p| p.p_type == PT_LOAD && p.p_flags & PF_X != 0 && p.p_memsz > 0)
        .map(|p| {
            let start = bias.wrapping_add(p.p_vaddr as usize);
            Segment {
                start,
                end: start.wrapping_add(p.p_memsz as usize),
                file_offset: p.p_offset,
            }
        })
        .collect();
    let (path, name) = if is_main {
        let path = std::fs::read_link("/proc/self/exe").ok();
        let shown = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        (path, shown)
    } else if name.starts_with('/') {
        (Some(PathBuf::from(&name)), name)
    } else {
        // The vDSO ("linux-vdso.so.1") and other objects without a file on disk.
        (None, name)
    };
    (!segments.is_empty()).then_some(Module {
        path,
        name,
        is_main,
        bias,
        segments,
    })
}

/// The return addresses of this thread's stack from the caller's frame on (the first is
/// inside the caller): what the sampler records, without a signal, for the symbolizer's
/// and encoder's tests. Walked by glibc's `backtrace` (the unwinder the handler may not
/// use, fine in a test), so it works with and without frame pointers.
#[cfg(test)]
#[inline(never)]
pub(crate) fn return_addresses_here(max: usize) -> Vec<usize> {
    let mut buf = vec![std::ptr::null_mut::<c_void>(); max + 1];
    let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
    // SAFETY: `buf` holds `len` writable pointers.
    let n = unsafe { libc::backtrace(buf.as_mut_ptr(), len) };
    // Entry 0 is inside this function.
    buf.iter()
        .take(usize::try_from(n).unwrap_or(0))
        .skip(1)
        .map(|&p| p as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(never)]
    fn marker() -> u32 {
        std::hint::black_box(7)
    }

    #[test]
    fn the_main_program_is_listed_first_with_its_file_and_our_code() {
        let modules = loaded_modules();
        let main = modules.first().expect("at least the main program");
        let exe = std::env::current_exe().unwrap();
        assert_eq!(main.path.as_deref(), Some(exe.as_path()));
        assert!(
            main.segment_of(marker as *const () as usize).is_some(),
            "our code is in the main program"
        );
        assert!(!main.segments.is_empty());
    }

    #[test]
    fn this_crate_is_in_the_main_program_and_libc_is_not() {
        assert!(in_main_program(marker as *const () as usize));
        assert!(!in_main_program(libc::timer_create as *const () as usize));
    }

    #[test]
    fn libc_is_listed_as_a_shared_library_with_a_path() {
        let modules = loaded_modules();
        let libc_mod = modules
            .iter()
            .find(|m| m.segment_of(libc::getpid as *const () as usize).is_some())
            .expect("getpid lies in some module");
        assert!(libc_mod.name.contains("libc"), "{}", libc_mod.name);
        assert!(libc_mod.path.as_ref().is_some_and(|p| p.exists()));
    }

    #[test]
    fn return_addresses_here_returns_addresses_inside_our_code() {
        let frames = return_addresses_here(4);
        assert!(!frames.is_empty());
        let main = &loaded_modules()[0];
        assert!(main.segment_of(frames[0]).is_some());
    }
}
