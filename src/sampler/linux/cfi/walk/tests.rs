use std::sync::Arc;

use super::*;
use crate::sampler::linux::cfi::table::ModuleTable;

/// A fake stack in a vector: `at(i)` is the address of word `i`.
struct Stack {
    words: Vec<usize>,
}

impl Stack {
    fn new(len: usize) -> Self {
        Self {
            words: vec![0; len],
        }
    }
    fn at(&self, i: usize) -> usize {
        self.words.as_ptr() as usize + i * WORD
    }
    fn bounds(&self) -> StackBounds {
        StackBounds {
            lo: self.at(0),
            hi: self.at(self.words.len()),
        }
    }
}

/// One object at 0x10000..0x20000 with the given rows (offsets from 0x10000).
fn tables(rows: &[(u32, Rule)]) -> Tables {
    Tables::new(vec![Arc::new(ModuleTable::new(
        0x10000,
        0x20000,
        rows.iter().map(|r| r.0).collect(),
        rows.iter().map(|r| r.1).collect(),
        0,
        "test".into(),
    ))])
}

fn sp_rule(cfa: i64) -> Rule {
    Rule::cfa(Kind::Sp, cfa, 0, 8).unwrap()
}

fn fp_rule() -> Rule {
    Rule::cfa(Kind::Fp, 16, 16, 8).unwrap()
}

fn run(
    tables: Option<&Tables>,
    mode: Mode,
    regs: Registers,
    stack: &Stack,
    cap: usize,
) -> (Vec<usize>, Walk) {
    let mut out = vec![0usize; cap];
    // SAFETY: the bounds are the vector's memory, alive for the call.
    let walk = unsafe { unwind(tables, mode, &regs, stack.bounds(), &mut out) };
    out.truncate(walk.len);
    (out, walk)
}

#[test]
fn a_frameless_leaf_then_a_frame_pointer_function_then_the_thread_start() {
    // 0x10100: frameless leaf (CFA = SP + 8); 0x10200: a function with a frame
    // record (CFA = FP + 16); 0x10300: the outermost function.
    let t = tables(&[
        (0x100, sp_rule(8)),
        (0x200, fp_rule()),
        (0x300, Rule::OUTERMOST),
        (0x400, Rule::UNCOVERED),
    ]);
    let mut stack = Stack::new(64);
    stack.words[4] = 0x10210; // leaf's return address into the middle function
    stack.words[10] = 0; // saved FP of the outermost function
    stack.words[11] = 0x10310; // middle function's return address
    let regs = Registers {
        pc: 0x10150,
        sp: stack.at(4),
        // The middle function's frame record (the leaf never touched FP).
        fp: stack.at(10),
        lr: 0,
    };
    let (frames, walk) = run(Some(&t), Mode::Cfi, regs, &stack, 16);
    assert_eq!(frames, [0x10150, 0x10210, 0x10310]);
    assert!(walk.complete && !walk.truncated);
    assert_eq!((walk.cfi_frames, walk.fp_frames), (2, 0));
    // Frame pointers alone lose the leaf's caller (the leaf has no frame record).
    let (frames, _) = run(None, Mode::Auto, regs, &stack, 16);
    assert_eq!(frames, [0x10150, 0x10310]);
}

#[test]
fn callers_are_looked_up_inside_their_call_instruction() {
    // The return address 0x10200 is the first byte after the caller's function ends
    // (a call as its last instruction): the caller's rule is the one before it.
    let t = tables(&[
        (0x100, sp_rule(8)),
        (0x180, sp_rule(16)),
        (0x200, Rule::OUTERMOST),
    ]);
    let mut stack = Stack::new(32);
    stack.words[2] = 0x10200; // leaf returns to the end of [0x180, 0x200)
    stack.words[4] = 0; // and that one returns to 0: the end
    let regs = Registers {
        pc: 0x10100,
        sp: stack.at(2),
        fp: 0,
        lr: 0,
    };
    let (frames, walk) = run(Some(&t), Mode::Cfi, regs, &stack, 16);
    // 0x10200 - 1 is under sp_rule(16): CFA = sp(3) + 16 = word 5, RA at word 4 = 0.
    assert_eq!(frames, [0x10100, 0x10200]);
    assert!(walk.complete);
}

#[test]
fn frames_without_cfi_take_a_frame_pointer_step_in_auto_mode_and_end_the_walk_in_cfi_mode() {
    let t = tables(&[(0x100, fp_rule()), (0x200, Rule::UNCOVERED)]);
    let mut stack = Stack::new(64);
    // Leaf at 0x30000 (outside every object) with a frame record at word 8.
    stack.words[8] = stack.at(20);
    stack.words[9] = 0x10110;
    stack.words[20] = 0;
    stack.words[21] = 0x40000; // back into code without CFI
    stack.words[22] = 0; // no further record
    let regs = Registers {
        pc: 0x30000,
        sp: stack.at(2),
        fp: stack.at(8),
        lr: 0,
    };
    let (frames, walk) = run(Some(&t), Mode::Auto, regs, &stack, 16);
    assert_eq!(frames, [0x30000, 0x10110, 0x40000]);
    assert_eq!((walk.cfi_frames, walk.fp_frames), (1, 1));
    assert!(walk.complete, "FP 0 ends the chain");
    let (frames, walk) = run(Some(&t), Mode::Cfi, regs, &stack, 16);
    assert_eq!(frames, [0x30000]);
    assert!(!walk.complete);
}

#[test]
fn rules_that_point_outside_the_stack_or_downwards_stop_the_walk() {
    let t = tables(&[(0x100, sp_rule(8 * 1000)), (0x200, Rule::UNCOVERED)]);
    let stack = Stack::new(16);
    let regs = Registers {
        pc: 0x10100,
        sp: stack.at(2),
        fp: 0,
        lr: 0,
    };
    let (frames, walk) = run(Some(&t), Mode::Cfi, regs, &stack, 16);
    assert_eq!(frames, [0x10100]);
    assert!(!walk.complete);
    // A frame-pointer step whose record lies below SP is refused before any read.
    let regs = Registers {
        pc: 0x30000,
        sp: stack.at(8),
        fp: stack.at(2),
        lr: 0,
    };
    let (frames, walk) = run(Some(&t), Mode::Auto, regs, &stack, 16);
    assert_eq!(frames, [0x30000]);
    assert!(!walk.complete);
}

/// A chain of `n` frame records, each returning to `0x1000 + i`.
fn chain(n: usize) -> (Stack, Registers) {
    let mut stack = Stack::new(2 * n + 8);
    for i in 0..n {
        let at = 2 + 2 * i;
        stack.words[at] = if i + 1 < n { stack.at(at + 2) } else { 0 };
        stack.words[at + 1] = 0x1000 + i;
    }
    let regs = Registers {
        pc: 7,
        sp: stack.at(2),
        fp: stack.at(2),
        lr: 0,
    };
    (stack, regs)
}

#[test]
fn a_walk_deeper_than_the_output_keeps_the_leaf_frames_and_the_outermost_ones() {
    let (stack, regs) = chain(300);
    let (frames, walk) = run(None, Mode::Auto, regs, &stack, 128);
    assert!(walk.truncated && walk.complete);
    assert_eq!(frames.len(), 128);
    let head = 128 - KEEP_OUTERMOST;
    assert_eq!(frames[0], 7);
    let expected_head: Vec<usize> = (0..head - 1).map(|i| 0x1000 + i).collect();
    assert_eq!(&frames[1..head], &expected_head[..]);
    let expected_tail: Vec<usize> = (300 - KEEP_OUTERMOST..300).map(|i| 0x1000 + i).collect();
    assert_eq!(&frames[head..], &expected_tail[..]);

    // Exactly full: nothing dropped.
    let (stack, regs) = chain(127);
    let (frames, walk) = run(None, Mode::Auto, regs, &stack, 128);
    assert!(!walk.truncated && walk.complete);
    assert_eq!(frames.len(), 128);
    assert_eq!(frames[127], 0x1000 + 126);
    // One more: the second-outermost survives in the ring, one middle frame is gone.
    let (stack, regs) = chain(128);
    let (frames, walk) = run(None, Mode::Auto, regs, &stack, 128);
    assert!(walk.truncated);
    assert_eq!(frames[127], 0x1000 + 127);
    assert_eq!(frames[head], 0x1000 + 128 - KEEP_OUTERMOST);
}

#[test]
fn tiny_outputs_are_filled_and_marked_truncated() {
    let (stack, regs) = chain(10);
    let (frames, walk) = run(None, Mode::Auto, regs, &stack, 3);
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0], 7);
    assert!(walk.truncated);
    let (_, walk) = run(None, Mode::Auto, regs, &stack, 0);
    assert_eq!(walk.len, 0);
}

#[test]
fn rotate_left_rotates_every_offset() {
    for len in 0..8 {
        for mid in 0..=len {
            let mut v: Vec<usize> = (0..len).collect();
            let mut expected = v.clone();
            expected.rotate_left(mid);
            rotate_left(&mut v, mid);
            assert_eq!(v, expected, "len {len} mid {mid}");
        }
    }
}
