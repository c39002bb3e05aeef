//! Stack unwinding inside the signal handler, behind a small trait so that a DWARF
//! unwinder (framehop can unwind without allocating) can replace frame pointers later.
//!
//! Everything here runs in the handler: no allocation, no locks, no panics (no indexing
//! that can fail, no arithmetic that can overflow-check).

use super::bounds::StackBounds;

/// The interrupted thread's registers, taken from the handler's `ucontext`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Registers {
    /// Program counter (the leaf).
    pub pc: usize,
    /// Stack pointer.
    pub sp: usize,
    /// Frame pointer (`rbp` / `x29`).
    pub fp: usize,
    /// Link register (aarch64 `x30`; 0 on x86_64). Unused by frame-pointer walks; kept
    /// for unwinders that can tell whether a leaf saved it (DWARF).
    #[allow(dead_code)]
    pub lr: usize,
}

/// Walks a stack from interrupted registers.
pub trait Unwinder {
    /// Writes the leaf PC and then return addresses (callers in order) into `out` and
    /// returns how many it wrote. Reads memory only inside `bounds`.
    ///
    /// # Safety
    /// `bounds` must be a range of mapped, readable memory for the whole call (the
    /// interrupted thread's stack, which stays mapped while its own handler runs).
    unsafe fn unwind(&self, regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> usize;
}

/// Frame-pointer unwinding: `[fp]` is the caller's frame pointer, `[fp + 8]` the return
/// address (x86_64 and aarch64 frame records alike).
pub struct FramePointerUnwinder;

/// Alignment of a frame record.
#[cfg(target_arch = "aarch64")]
const FRAME_ALIGN: usize = 16;
#[cfg(not(target_arch = "aarch64"))]
const FRAME_ALIGN: usize = 8;

const WORD: usize = std::mem::size_of::<usize>();

impl Unwinder for FramePointerUnwinder {
    #[inline(always)]
    unsafe fn unwind(&self, regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> usize {
        let mut n = 0;
        let Some(first) = out.first_mut() else {
            return 0;
        };
        *first = regs.pc;
        n += 1;
        // The first record may sit at SP itself (right after `push rbp; mov rbp, rsp`).
        let mut lowest = regs.sp;
        let mut fp = regs.fp;
        while let Some(slot) = out.get_mut(n) {
            // Each record: inside [max(sp, lo), hi - 2 words], aligned, above the last.
            if fp < lowest
                || fp < bounds.lo
                || fp % FRAME_ALIGN != 0
                || fp > bounds.hi.saturating_sub(2 * WORD)
            {
                break;
            }
            // SAFETY: `fp .. fp + 2 words` lies inside `bounds` (checked above), which the
            // caller guarantees is mapped and readable; the address is word-aligned.
            let (next, ret) = unsafe {
                (
                    std::ptr::read_volatile(fp as *const usize),
                    std::ptr::read_volatile((fp + WORD) as *const usize),
                )
            };
            if ret == 0 {
                break;
            }
            *slot = ret;
            n += 1;
            // Strictly increasing: the next record must be above this one.
            lowest = fp + 2 * WORD;
            fp = next;
        }
        n
    }
}

/// Reads the interrupted registers out of the handler's third argument.
///
/// # Safety
/// `ucontext` must be the `ucontext_t` the kernel passed to an `SA_SIGINFO` handler.
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[inline(always)]
pub unsafe fn registers(ucontext: *const libc::ucontext_t) -> Registers {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a fake stack of frame records in a vector and walks it.
    #[test]
    fn walks_records_until_a_zero_return_address() {
        let mut stack = vec![0usize; 64];
        let base = stack.as_ptr() as usize;
        let at = |i: usize| base + i * WORD;
        // Records at word 8, 20, 40; the last one's return address is 0.
        stack[8] = at(20);
        stack[9] = 0x1111;
        stack[20] = at(40);
        stack[21] = 0x2222;
        stack[40] = at(60);
        stack[41] = 0;
        let bounds = StackBounds {
            lo: base,
            hi: base + 64 * WORD,
        };
        let regs = Registers {
            pc: 0x9999,
            sp: at(4),
            fp: at(8),
            lr: 0,
        };
        let mut out = [0usize; 16];
        // SAFETY: `bounds` is the vector's memory, alive for the call.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[0x9999, 0x1111, 0x2222]);
    }

    #[test]
    fn stops_at_records_that_go_down_leave_bounds_or_are_misaligned() {
        let mut stack = vec![0usize; 64];
        let base = stack.as_ptr() as usize;
        let at = |i: usize| base + i * WORD;
        stack[10] = at(6); // goes down
        stack[11] = 0xaaaa;
        let bounds = StackBounds {
            lo: base,
            hi: base + 64 * WORD,
        };
        let mut out = [0usize; 16];
        let regs = Registers {
            pc: 1,
            sp: at(2),
            fp: at(10),
            lr: 0,
        };
        // SAFETY: `bounds` is the vector's memory.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[1, 0xaaaa]);

        stack[10] = at(200); // beyond the bounds
                             // SAFETY: as above.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[1, 0xaaaa]);

        let regs = Registers {
            pc: 1,
            sp: at(2),
            fp: at(10) + 1,
            lr: 0,
        };
        // SAFETY: as above.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[1]);

        let regs = Registers {
            pc: 1,
            sp: at(12),
            fp: at(10),
            lr: 0,
        };
        // SAFETY: as above; fp below sp is refused before any read.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[1]);
    }

    #[test]
    fn a_full_output_cuts_the_walk() {
        let mut stack = vec![0usize; 64];
        let base = stack.as_ptr() as usize;
        let at = |i: usize| base + i * WORD;
        for i in (0..60).step_by(2) {
            stack[i] = at(i + 2);
            stack[i + 1] = 0x100 + i;
        }
        let bounds = StackBounds {
            lo: base,
            hi: base + 64 * WORD,
        };
        let regs = Registers {
            pc: 7,
            sp: base,
            fp: base,
            lr: 0,
        };
        let mut out = [0usize; 4];
        // SAFETY: `bounds` is the vector's memory.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) };
        assert_eq!(&out[..n], &[7, 0x100, 0x102, 0x104]);
    }
}
