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

/// Every module the dynamic loader knows now, main program first (the loader's order).
pub(crate) fn loaded_modules() -> Vec<Module> {
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: 1. `collect_module` matches the callback type `dl_iterate_phdr` expects.
    //         2. `data` points to `out`, which outlives the call; the callback is only
    //            invoked during this call, on this thread, and is the only user of it.
    unsafe {
        libc::dl_iterate_phdr(
            Some(collect_module),
            (&mut out as *mut Vec<Module>).cast::<c_void>(),
        );
    }
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

/// `dl_iterate_phdr` callback: copies one object's name, bias and executable segments.
///
/// # Safety
/// `info` must point to a valid `dl_phdr_info` whose `dlpi_phdr` array has `dlpi_phnum`
/// entries, and `data` must point to a `Vec<Module>` not otherwise in use (both hold for
/// the loader calling it from [`loaded_modules`]).
unsafe extern "C" fn collect_module(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    data: *mut c_void,
) -> c_int {
    // SAFETY: the caller passes a valid `dl_phdr_info` for the duration of the call.
    let info = unsafe { &*info };
    // SAFETY: `data` is the `&mut Vec<Module>` passed by `loaded_modules`, used by no one
    // else during the iteration.
    let out = unsafe { &mut *data.cast::<Vec<Module>>() };
    let name = if info.dlpi_name.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `dlpi_name` is a NUL-terminated string owned by the loader,
        // valid during the callback; we copy it before returning.
        unsafe { CStr::from_ptr(info.dlpi_name) }
            .to_string_lossy()
            .into_owned()
    };
    let phdrs: &[libc::Elf64_Phdr] = if info.dlpi_phdr.is_null() || info.dlpi_phnum == 0 {
        &[]
    } else {
        // SAFETY: the loader guarantees `dlpi_phdr` points to `dlpi_phnum` program headers
        // that stay mapped while the object is loaded (at least for this callback).
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) }
    };
    let bias = info.dlpi_addr as usize;
    let segments: Vec<Segment> = phdrs
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
    // The first object is the main program, whose loader name is empty.
    let is_main = out.is_empty() && name.is_empty();
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
    if !segments.is_empty() {
        out.push(Module {
            path,
            name,
            is_main,
            bias,
            segments,
        });
    }
    0
}

/// Walks this thread's frame-pointer chain from the caller's frame: real return addresses
/// for the symbolizer's tests (what the sampler records, without a signal).
///
/// Stops at the first frame pointer that is null, misaligned, not strictly above the
/// previous one or outside this thread's stack, or after `max` frames.
#[cfg(test)]
#[inline(never)]
pub(crate) fn frame_pointer_backtrace(max: usize) -> Vec<usize> {
    let (low, high) = current_stack_bounds();
    let mut fp: usize;
    // SAFETY: reads the frame-pointer register into a local; no memory is touched.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    let word = std::mem::size_of::<usize>();
    let mut out = Vec::new();
    let mut prev = 0usize;
    while out.len() < max {
        if fp == 0 || fp % word != 0 || fp <= prev || fp < low || fp + 2 * word > high {
            break;
        }
        // SAFETY: `fp` and `fp + word` lie inside this thread's stack mapping (checked
        // above), which stays mapped while this function runs; both are aligned.
        let (next, ret) = unsafe { (*(fp as *const usize), *((fp + word) as *const usize)) };
        if ret == 0 {
            break;
        }
        out.push(ret);
        prev = fp;
        fp = next;
    }
    out
}

/// `[low, high)` of the calling thread's stack (tests only: allocates).
#[cfg(test)]
fn current_stack_bounds() -> (usize, usize) {
    let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    let mut addr: *mut c_void = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: 1. `pthread_getattr_np` initialises `attr` for the calling thread on success.
    //         2. `pthread_attr_getstack` only writes the two out-pointers.
    //         3. `attr` is destroyed exactly once, after a successful init.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return (0, 0);
        }
        let ok = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) == 0;
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        if !ok {
            return (0, 0);
        }
    }
    (addr as usize, addr as usize + size)
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
    fn frame_pointer_backtrace_returns_addresses_inside_our_code() {
        let frames = frame_pointer_backtrace(4);
        assert!(!frames.is_empty());
        let main = &loaded_modules()[0];
        assert!(main.segment_of(frames[0]).is_some());
    }
}
