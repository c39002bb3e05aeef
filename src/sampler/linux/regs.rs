//! The registers an unwind starts from: those of an interrupted context (the handler's
//! `ucontext`) or of the calling function itself, and the frame-record alignment.

/// The interrupted thread's registers, taken from the handler's `ucontext`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Registers {
    /// Program counter (the leaf).
    pub pc: usize,
    /// Stack pointer.
    pub sp: usize,
    /// Frame pointer (`rbp` / `x29`).
    pub fp: usize,
    /// Link register (aarch64 `x30`; 0 on x86_64): the return address of a leaf whose
    /// CFI says it has not saved it yet.
    pub lr: usize,
}

/// Alignment of a frame record.
#[cfg(target_arch = "aarch64")]
pub(crate) const FRAME_ALIGN: usize = 16;
#[cfg(not(target_arch = "aarch64"))]
pub(crate) const FRAME_ALIGN: usize = 8;

/// Reads the interrupted registers out of the handler's third argument.
///
/// # Safety
/// `ucontext` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline(always)]
pub(crate) unsafe fn registers(ucontext: *const libc::ucontext_t) -> Registers {
    // SAFETY: the caller guarantees `ucontext` is the kernel's; the indices are
    // constants inside `gregs` (23 entries).
    let gregs = unsafe { &(*ucontext).uc_mcontext.gregs };
    Registers {
        pc: gregs[libc::REG_RIP as usize] as usize,
        sp: gregs[libc::REG_RSP as usize] as usize,
        fp: gregs[libc::REG_RBP as usize] as usize,
        lr: 0,
    }
}

/// Reads the interrupted registers out of the handler's third argument.
///
/// # Safety
/// `ucontext` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
#[inline(always)]
pub unsafe fn registers(ucontext: *const libc::ucontext_t) -> Registers {
    // SAFETY: the caller guarantees `ucontext` is the kernel's; 29 and 30 are inside
    // `regs` (31 entries).
    let mc = unsafe { &(*ucontext).uc_mcontext };
    Registers {
        pc: mc.pc as usize,
        sp: mc.sp as usize,
        fp: mc.regs[29] as usize,
        lr: mc.regs[30] as usize,
    }
}


/// The registers of the calling function at this point: walk from here with
/// [`unwind`](super::unwind::unwind) (the allocation profiler's entry point).
#[inline(always)]
pub(crate) fn current_registers() -> Registers {
    let (pc, sp, fp, lr): (usize, usize, usize, usize);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: reads the instruction pointer, stack pointer and frame pointer into
    // registers; no memory access, no stack change.
    unsafe {
        std::arch::asm!(
            "lea {pc}, [rip]",
            "mov {sp}, rsp",
            "mov {fp}, rbp",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            options(nomem, nostack, preserves_flags)
        );
        lr = 0;
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above (aarch64: `adr` for the PC, x29, x30).
    unsafe {
        std::arch::asm!(
            "adr {pc}, .",
            "mov {sp}, sp",
            "mov {fp}, x29",
            "mov {lr}, x30",
            pc = out(reg) pc,
            sp = out(reg) sp,
            fp = out(reg) fp,
            lr = out(reg) lr,
            options(nomem, nostack, preserves_flags)
        );
    }
    Registers { pc, sp, fp, lr }
}
