//! The stack walk over published tables. Runs in the signal handler (and, later, inside
//! the allocator): no allocation, no locks, no system calls, no panics; it reads memory
//! only inside the given stack bounds, and keeps no state between calls (reentrant: a
//! nested signal can run another walk on the same thread).
//!
//! Per frame: look the PC up (the leaf at its own address, callers one byte before
//! their return address, inside their call instruction); a compact rule gives the CFA
//! and where the return address and the caller's frame pointer are saved. Frames
//! without a usable rule take one frame-pointer step instead (mixed stacks: JIT code,
//! hand-written assembly, objects with malformed CFI), unless the mode forbids it.

use super::super::bounds::StackBounds;
use super::super::regs::{Registers, FRAME_ALIGN};
use super::table::{Kind, Rule, Tables, WORD};

/// How frames are walked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// CFI where an object has it, the frame pointer for frames without.
    Auto,
    /// CFI only: a frame without a usable rule ends the walk.
    Cfi,
}

/// Most frames a walk visits; beyond it the walk stops (marked truncated).
pub(crate) const MAX_WALK: usize = 1024;
/// Outermost frames kept when a walk is longer than the output (the thread start and
/// the runtime's worker loop), in addition to the leaf frames.
pub(crate) const KEEP_OUTERMOST: usize = 32;

/// What a walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Frames written to `out` (leaf PC first).
    pub(crate) len: usize,
    /// Frames walked by a CFI rule.
    pub(crate) cfi_frames: u32,
    /// Frames walked by the frame pointer.
    pub(crate) fp_frames: u32,
    /// The walk reached the outermost frame (an undefined return address, a zero
    /// return address or a zero frame pointer).
    pub(crate) complete: bool,
    /// Frames were dropped from the middle (or the end, past [`MAX_WALK`]).
    pub(crate) truncated: bool,
}

/// Strips a pointer-authentication code from a return address (aarch64; a no-op on
/// x86_64). User addresses have at most 48 bits on Linux here.
#[inline(always)]
fn strip(ra: usize) -> usize {
    if cfg!(target_arch = "aarch64") {
        ra & 0x0000_ffff_ffff_ffff
    } else {
        ra
    }
}

/// Reads the word at `addr` if `lo <= addr`, `addr + WORD <= hi` and it is aligned.
///
/// # Safety
/// `lo..hi` must be mapped and readable for the call.
#[inline(always)]
unsafe fn read(addr: usize, lo: usize, hi: usize) -> Option<usize> {
    if addr < lo || addr % WORD != 0 || addr > hi.checked_sub(WORD)? {
        return None;
    }
    // SAFETY: `addr .. addr + WORD` lies inside `lo..hi` (checked above), which the
    // caller guarantees is readable; the address is word-aligned.
    Some(unsafe { std::ptr::read_volatile(addr as *const usize) })
}

/// One unwound frame: the caller's registers.
struct Step {
    pc: usize,
    sp: usize,
    fp: usize,
    cfi: bool,
}

/// Why a step did not produce a caller.
enum Stop {
    /// The outermost frame.
    End,
    /// No valid caller found.
    Lost,
}

/// One step by a compact rule. `None` when the rule's reads fail the checks.
///
/// # Safety
/// `bounds` readable (see [`unwind`]).
#[inline(always)]
unsafe fn cfi_step(
    rule: Rule,
    kind: Kind,
    regs: &Registers,
    leaf: bool,
    bounds: StackBounds,
) -> Option<Step> {
    let base = if kind == Kind::Sp { regs.sp } else { regs.fp };
    let cfa = base.checked_add(rule.cfa_offset())?;
    // The caller's frame lies above this one.
    if cfa < regs.sp || cfa > bounds.hi {
        return None;
    }
    let lo = regs.sp.max(bounds.lo);
    let ra = match rule.ra_slot() {
        // Still in the link register: only the interrupted frame has a valid one.
        0 if leaf && cfg!(target_arch = "aarch64") => regs.lr,
        0 => return None,
        // SAFETY: `read` checks the address against `lo..hi` inside `bounds`.
        slot => unsafe { read(cfa.checked_sub(slot)?, lo, bounds.hi)? },
    };
    let fp = match rule.fp_slot() {
        0 => regs.fp,
        // SAFETY: as above.
        slot => unsafe { read(cfa.checked_sub(slot)?, lo, bounds.hi)? },
    };
    // A caller at the same SP is only possible from a leaf that has not moved SP.
    if cfa == regs.sp && !leaf {
        return None;
    }
    Some(Step {
        pc: strip(ra),
        sp: cfa,
        fp,
        cfi: true,
    })
}

/// One frame-pointer step: `[fp]` the caller's FP, `[fp + WORD]` the return address.
///
/// # Safety
/// `bounds` readable (see [`unwind`]).
#[inline(always)]
unsafe fn fp_step(regs: &Registers, bounds: StackBounds) -> Result<Step, Stop> {
    if regs.fp == 0 {
        // The ABI's end of the frame chain (thread start, `_start`).
        return Err(Stop::End);
    }
    let fp = regs.fp;
    if fp % FRAME_ALIGN != 0 {
        return Err(Stop::Lost);
    }
    let lo = regs.sp.max(bounds.lo);
    // SAFETY: `read` checks both addresses against `lo..hi` inside `bounds`.
    let (next, ra) = unsafe {
        (
            read(fp, lo, bounds.hi).ok_or(Stop::Lost)?,
            read(fp.checked_add(WORD).ok_or(Stop::Lost)?, lo, bounds.hi).ok_or(Stop::Lost)?,
        )
    };
    Ok(Step {
        pc: strip(ra),
        sp: fp + 2 * WORD,
        fp: next,
        cfi: false,
    })
}

/// Reverses `s[..mid]` and `s[mid..]`, then all of `s`: rotates left by `mid`
/// in place without a panic path.
#[inline(always)]
fn rotate_left(s: &mut [usize], mid: usize) {
    if let Some(head) = s.get_mut(..mid) {
        head.reverse();
    }
    if let Some(tail) = s.get_mut(mid..) {
        tail.reverse();
    }
    s.reverse();
}

/// Walks from `regs` and writes the leaf PC and then return addresses (callers in
/// order) into `out`. When the stack is deeper than `out`, the first
/// `out.len() - KEEP_OUTERMOST` frames and the last `KEEP_OUTERMOST` frames are kept
/// (in order) and the walk is marked truncated.
///
/// # Safety
/// `bounds` must be mapped and readable for the whole call (the interrupted thread's
/// stack, which stays mapped while its own handler runs; or the caller's own stack).
// Inlined into the handler: a call into another codegen unit is one the compiler cannot
// prove nounwind, and the `extern "C"` handler would then carry an abort-on-unwind path.
#[inline(always)]
pub(crate) unsafe fn unwind(
    tables: Option<&Tables>,
    mode: Mode,
    regs: &Registers,
    bounds: StackBounds,
    out: &mut [usize],
) -> Walk {
    let mut walk = Walk::default();
    let cap = out.len();
    let Some(first) = out.first_mut() else {
        return walk;
    };
    *first = regs.pc;
    // Frames before the ring; with a small output there is no ring.
    let head = if cap > 2 * KEEP_OUTERMOST {
        cap - KEEP_OUTERMOST
    } else {
        cap
    };
    let mut total = 1usize;
    let mut regs = *regs;
    let mut leaf = true;
    loop {
        if total >= MAX_WALK {
            walk.truncated = true;
            break;
        }
        let lookup = if leaf {
            regs.pc
        } else {
            regs.pc.wrapping_sub(1)
        };
        let rule = match tables {
            Some(tables) => tables.lookup(lookup),
            None => Rule::UNCOVERED,
        };
        // An `if` chain, not a `match` over the kinds: few enough branches that the
        // compiler emits compares rather than a jump table (the handler's disassembly
        // check refuses every indirect jump).
        let kind = rule.kind();
        let step = if kind == Kind::Outermost {
            Err(Stop::End)
        } else if kind == Kind::Sp || kind == Kind::Fp {
            // SAFETY: the caller guarantees `bounds` is readable.
            match unsafe { cfi_step(rule, kind, &regs, leaf, bounds) } {
                Some(step) => Ok(step),
                None if mode == Mode::Auto => {
                    // SAFETY: as above.
                    unsafe { fp_step(&regs, bounds) }
                }
                None => Err(Stop::Lost),
            }
        } else if mode == Mode::Auto {
            // Inexpressible or uncovered: one frame-pointer step.
            // SAFETY: as above.
            unsafe { fp_step(&regs, bounds) }
        } else {
            Err(Stop::Lost)
        };
        let step = match step {
            Ok(step) if step.pc == 0 => {
                walk.complete = true;
                break;
            }
            Ok(step) => step,
            Err(Stop::End) => {
                walk.complete = true;
                break;
            }
            Err(Stop::Lost) => break,
        };
        if step.cfi {
            walk.cfi_frames += 1;
        } else {
            walk.fp_frames += 1;
        }
        // Each caller's frame lies strictly above the callee's (no loops).
        if step.sp <= regs.sp && !(leaf && step.sp == regs.sp) {
            break;
        }
        let index = if total < cap {
            total
        } else {
            head + (total - head) % (cap - head).max(1)
        };
        if let Some(slot) = out.get_mut(index) {
            *slot = step.pc;
        }
        total += 1;
        regs = Registers {
            pc: step.pc,
            sp: step.sp,
            fp: step.fp,
            lr: 0,
        };
        leaf = false;
    }
    if total > cap {
        walk.truncated = true;
        // The ring `out[head..]` holds the outermost frames; the oldest is at
        // `(total - head) % ring`.
        let ring = cap - head;
        if ring > 0 {
            if let Some(tail) = out.get_mut(head..) {
                rotate_left(tail, (total - head) % ring);
            }
        }
        walk.len = cap;
    } else {
        walk.len = total;
    }
    walk
}

#[cfg(test)]
mod tests;
