//! Stack unwinding inside the signal handler, behind a small trait: frame pointers, or
//! DWARF call-frame information over tables compiled outside the handler (`cfi`).
//!
//! Everything here runs in the handler: no allocation, no locks, no panics (no indexing
//! that can fail, no arithmetic that can overflow-check).

use super::bounds::StackBounds;
use super::cfi::{self, Walk, WalkMode};
use super::regs::Registers;

/// Walks a stack from interrupted registers.
pub(crate) trait Unwinder {
    /// Writes the leaf PC and then return addresses (callers in order) into `out`.
    /// Reads memory only inside `bounds`. Signal-safe, reentrant.
    ///
    /// # Safety
    /// `bounds` must be a range of mapped, readable memory for the whole call (the
    /// interrupted thread's stack, which stays mapped while its own handler runs).
    unsafe fn unwind(&self, regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> Walk;
}

/// Frame-pointer unwinding: `[fp]` is the caller's frame pointer, `[fp + 8]` the return
/// address (x86_64 and aarch64 frame records alike). Each record must be aligned,
/// inside the bounds and above the previous one.
pub(crate) struct FramePointerUnwinder;

/// DWARF CFI unwinding over the published tables; frames without a usable rule take a
/// frame-pointer step when `fallback` is set, and end the walk otherwise.
pub(crate) struct DwarfUnwinder {
    /// Frame-pointer steps for frames without CFI.
    pub fallback: bool,
}

impl Unwinder for FramePointerUnwinder {
    #[inline(always)]
    unsafe fn unwind(&self, regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> Walk {
        // SAFETY: the caller's guarantee; without tables every frame is a
        // frame-pointer step.
        unsafe { cfi::walk(None, WalkMode::Auto, regs, bounds, out) }
    }
}

impl Unwinder for DwarfUnwinder {
    #[inline(always)]
    unsafe fn unwind(&self, regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> Walk {
        let mode = if self.fallback {
            WalkMode::Auto
        } else {
            WalkMode::Cfi
        };
        cfi::with_tables(|tables| {
            // SAFETY: the caller's guarantee; `tables` stays valid inside
            // `with_tables`.
            unsafe { cfi::walk(tables, mode, regs, bounds, out) }
        })
    }
}

/// Walks the stack from `regs` with the unwinder the session chose. Signal-safe: no
/// allocation, no lock, no system call; stateless and reentrant.
///
/// # Safety
/// `bounds` must be mapped and readable for the whole call.
#[inline(always)]
pub(crate) unsafe fn unwind(regs: &Registers, bounds: StackBounds, out: &mut [usize]) -> Walk {
    // (A match, not a `dyn`: the handler makes no indirect calls.)
    match cfi::mode() {
        // SAFETY: the caller guarantees `bounds`.
        0 => unsafe { FramePointerUnwinder.unwind(regs, bounds, out) },
        // SAFETY: as above.
        1 => unsafe { DwarfUnwinder { fallback: true }.unwind(regs, bounds, out) },
        // SAFETY: as above.
        _ => unsafe { DwarfUnwinder { fallback: false }.unwind(regs, bounds, out) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORD: usize = std::mem::size_of::<usize>();

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
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
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
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
        assert_eq!(&out[..n], &[1, 0xaaaa]);

        stack[10] = at(200); // beyond the bounds
                             // SAFETY: as above.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
        assert_eq!(&out[..n], &[1, 0xaaaa]);

        let regs = Registers {
            pc: 1,
            sp: at(2),
            fp: at(10) + 1,
            lr: 0,
        };
        // SAFETY: as above.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
        assert_eq!(&out[..n], &[1]);

        let regs = Registers {
            pc: 1,
            sp: at(12),
            fp: at(10),
            lr: 0,
        };
        // SAFETY: as above; fp below sp is refused before any read.
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
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
        let n = unsafe { FramePointerUnwinder.unwind(&regs, bounds, &mut out) }.len;
        assert_eq!(&out[..n], &[7, 0x100, 0x102, 0x104]);
    }
}
