use super::*;
use crate::sampler::linux::cfi::loaded::main_program_cfi;
use crate::sampler::linux::cfi::table::WORD;

fn source<'a>(bytes: &'a [u8], addr: u64, hdr: u64, text: &'a [(usize, usize)]) -> Source<'a> {
    Source {
        name: "test",
        eh_frame: bytes,
        eh_frame_addr: addr,
        eh_frame_hdr_addr: Some(hdr),
        text,
    }
}

/// Checks what a table promises the handler: sorted rows inside the executable text.
fn check_table(table: &ModuleTable, text: &[(usize, usize)]) {
    assert_eq!(table.addrs.len(), table.rules.len());
    assert!(
        table.addrs.windows(2).all(|w| w[0] < w[1]),
        "rows are sorted"
    );
    assert!(table.start < table.end);
    // An object may have several executable segments (layouts differ between builds,
    // e.g. with frame pointers): every row starts inside one of them, and the table
    // ends within the last.
    let inside = |a: usize| text.iter().any(|&(lo, hi)| lo <= a && a < hi);
    assert!(
        table.addrs.iter().all(|&a| inside(table.start + a as usize)),
        "rows stay inside the executable segments"
    );
    let text_end = text.iter().map(|&(_, hi)| hi).max().unwrap_or(0);
    assert!(table.end <= text_end, "the table ends inside the text");
}

#[test]
fn the_test_binary_compiles_into_a_table_covering_this_function() {
    let (bytes, addr, hdr, text) = main_program_cfi();
    let (table, counts) = build(&source(&bytes, addr, hdr, &text)).expect("builds");
    check_table(&table, &text);
    let here = the_test_binary_compiles_into_a_table_covering_this_function as fn() as usize;
    let rule = table.lookup(here);
    // At a function's first instruction the CFA is SP + one word (the return address).
    assert_eq!(rule.kind(), Kind::Sp, "{rule:?}");
    assert_eq!(rule.cfa_offset(), WORD);
    assert!(table.rules.len() > 1000, "{} rows", table.rules.len());
    assert!(
        table.inexpressible * 100 < table.rules.len(),
        "{} of {} rows inexpressible",
        table.inexpressible,
        table.rules.len()
    );
    assert_eq!(counts.fdes_outside_text, 0);
    assert_eq!(counts.rows_outside_fde, 0, "real CFI keeps every row inside its FDE");
}

/// xorshift64: the same pseudo-random bytes on every run.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn truncated_flipped_and_garbage_eh_frames_never_panic_and_never_leave_the_text() {
    let (bytes, addr, hdr, text) = main_program_cfi();
    // Keep the fuzz quick: the first 64 KiB of real CFI.
    let real = &bytes[..bytes.len().min(64 * 1024)];
    let mut next = rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut refused) = (0, 0);
    let mut tally = |result: Result<(ModuleTable, BuildCounts), BuildError>| match result {
        Ok((table, _)) => {
            check_table(&table, &text);
            ok += 1;
        }
        Err(_) => refused += 1,
    };
    // Truncated at many lengths (a cut entry is an error, not a panic).
    for len in (0..real.len()).step_by(real.len() / 97 + 1) {
        tally(build(&source(&real[..len], addr, hdr, &text)));
    }
    // Random byte flips in real CFI.
    for _ in 0..200 {
        let mut copy = real.to_vec();
        for _ in 0..1 + next() % 16 {
            let at = (next() as usize) % copy.len();
            copy[at] = next() as u8;
        }
        tally(build(&source(&copy, addr, hdr, &text)));
    }
    // Pure garbage.
    for _ in 0..200 {
        let len = (next() % 4096) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        tally(build(&source(&garbage, addr, hdr, &text)));
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

#[test]
fn fdes_outside_the_executable_segments_are_ignored_and_counted() {
    let (bytes, addr, hdr, _) = main_program_cfi();
    // Pretend the text is a tiny range nowhere near the real code.
    let text = [(0x1000usize, 0x2000usize)];
    match build(&source(&bytes, addr, hdr, &text)) {
        Err(BuildError::Empty) => {}
        other => panic!("expected Empty, got {other:?}"),
    }
}
