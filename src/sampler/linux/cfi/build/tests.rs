use super::*;
use crate::sampler::linux::cfi::loaded::{loaded_cfi, CopiedCfi};
use crate::sampler::linux::cfi::table::WORD;

/// The main program's CFI.
fn main_program() -> CopiedCfi {
    loaded_cfi().swap_remove(0)
}

/// `bytes` as `.eh_frame` at `cfi`'s address, `hdr` as its `.eh_frame_hdr` (`None`: no
/// header table, so the build sorts).
fn source<'a>(cfi: &'a CopiedCfi, bytes: &'a [u8], hdr: Option<&'a [u8]>) -> Source<'a> {
    Source {
        name: "test",
        eh_frame: bytes,
        eh_frame_addr: cfi.eh_frame_addr,
        eh_frame_hdr: hdr.map(|h| (cfi.hdr_addr, h)),
        text: &cfi.text,
    }
}

/// Whether two tables hold the same rows.
fn same_rows(a: &ModuleTable, b: &ModuleTable) -> bool {
    (a.start, a.end, a.inexpressible) == (b.start, b.end, b.inexpressible)
        && a.addrs == b.addrs
        && a.rules == b.rules
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
    let cfi = main_program();
    let (table, counts) = build(&source(&cfi, &cfi.eh_frame, Some(&cfi.hdr))).expect("builds");
    check_table(&table, &cfi.text);
    assert!(counts.in_address_order, "the header's table gives the order");
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
    let cfi = main_program();
    let text = &cfi.text;
    // Keep the fuzz quick: the first 64 KiB of real CFI, without the header's table
    // (it lists FDEs past the cut; the damaged table is fuzzed below).
    let real = &cfi.eh_frame[..cfi.eh_frame.len().min(64 * 1024)];
    let mut next = rng(0x9E37_79B9_7F4A_7C15);
    let (mut ok, mut refused) = (0, 0);
    let mut tally = |result: Result<(ModuleTable, BuildCounts), BuildError>| match result {
        Ok((table, _)) => {
            check_table(&table, text);
            ok += 1;
        }
        Err(_) => refused += 1,
    };
    // Truncated at many lengths (a cut entry is an error, not a panic).
    for len in (0..real.len()).step_by(real.len() / 97 + 1) {
        tally(build(&source(&cfi, &real[..len], None)));
    }
    // Random byte flips in real CFI.
    for _ in 0..200 {
        let mut copy = real.to_vec();
        for _ in 0..1 + next() % 16 {
            let at = (next() as usize) % copy.len();
            copy[at] = next() as u8;
        }
        tally(build(&source(&cfi, &copy, None)));
    }
    // Pure garbage.
    for _ in 0..200 {
        let len = (next() % 4096) as usize;
        let garbage: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        tally(build(&source(&cfi, &garbage, None)));
    }
    assert!(ok > 0 && refused > 0, "ok {ok}, refused {refused}");
}

#[test]
fn fdes_outside_the_executable_segments_are_ignored_and_counted() {
    let mut cfi = main_program();
    // Pretend the text is a tiny range nowhere near the real code.
    cfi.text = vec![(0x1000usize, 0x2000usize)];
    match build(&source(&cfi, &cfi.eh_frame, Some(&cfi.hdr))) {
        Err(BuildError::Empty) => {}
        other => panic!("expected Empty, got {other:?}"),
    }
}

#[test]
fn rows_taken_in_the_headers_order_make_the_same_table_as_sorted_rows() {
    let objects = loaded_cfi();
    let mut in_order = Vec::new();
    for cfi in &objects {
        let Ok((sorted, sorted_counts)) = build(&source(cfi, &cfi.eh_frame, None)) else {
            continue;
        };
        assert!(!sorted_counts.in_address_order);
        let (table, counts) = build(&source(cfi, &cfi.eh_frame, Some(&cfi.hdr))).unwrap();
        assert!(same_rows(&table, &sorted), "{}: the two builds differ", cfi.name);
        assert_eq!(counts.fdes_outside_text, sorted_counts.fdes_outside_text);
        assert_eq!(counts.rows_outside_fde, sorted_counts.rows_outside_fde);
        if counts.in_address_order {
            in_order.push(cfi.name.as_str());
        }
    }
    // The main program, libc and the loader at least: every linker writes the table.
    assert!(in_order.len() >= 3, "taken in order: {in_order:?}");
    assert_eq!(in_order[0], "", "the main program comes first: {in_order:?}");
}

/// Where `.eh_frame_hdr`'s table starts and how long an entry is, for the common
/// encodings (4-byte fields); `None` for any other.
fn table_layout(hdr: &[u8]) -> Option<(usize, usize)> {
    // version, eh_frame_ptr encoding, fde_count encoding, table encoding, then the two
    // 4-byte fields.
    let four_bytes = |enc: u8| matches!(enc & 0x0f, 0x03 | 0x0b);
    (hdr.len() >= 12 && four_bytes(hdr[1]) && four_bytes(hdr[2]) && four_bytes(hdr[3]))
        .then_some((12, 8))
}

#[test]
fn fdes_listed_out_of_order_fall_back_to_sorting_with_the_same_result() {
    let cfi = main_program();
    let (start, entry) = table_layout(&cfi.hdr).expect("the usual 4-byte header encodings");
    let mut hdr = cfi.hdr.clone();
    // Swap the first two entries: the rows then go backwards once.
    let (first, second) = (start..start + entry, start + entry..start + 2 * entry);
    let saved = hdr[first.clone()].to_vec();
    hdr.copy_within(second.clone(), first.start);
    hdr[second].copy_from_slice(&saved);
    let (table, counts) = build(&source(&cfi, &cfi.eh_frame, Some(&hdr))).unwrap();
    assert!(!counts.in_address_order, "out of order is noticed");
    let (sorted, _) = build(&source(&cfi, &cfi.eh_frame, None)).unwrap();
    assert!(same_rows(&table, &sorted));
}

#[test]
fn a_damaged_header_table_never_panics_and_never_leaves_the_text() {
    let cfi = main_program();
    let (sorted, _) = build(&source(&cfi, &cfi.eh_frame, None)).unwrap();
    let mut next = rng(0x2545_F491_4F6C_DD1D);
    let mut in_order = 0;
    for _ in 0..200 {
        let mut hdr = cfi.hdr.clone();
        for _ in 0..1 + next() % 8 {
            let at = (next() as usize) % hdr.len();
            hdr[at] = next() as u8;
        }
        // The section-order build reads `.eh_frame` itself, so whatever the header
        // says, the object gets a table; one built in the header's order is the same.
        let (table, counts) = build(&source(&cfi, &cfi.eh_frame, Some(&hdr))).unwrap();
        check_table(&table, &cfi.text);
        if counts.in_address_order {
            in_order += 1;
            assert!(same_rows(&table, &sorted), "a damaged table changed the rows");
        }
    }
    assert!(in_order < 200, "some damage is noticed");
}

#[test]
fn a_header_listing_fewer_fdes_than_the_section_is_not_trusted() {
    let cfi = main_program();
    let (start, _) = table_layout(&cfi.hdr).expect("the usual 4-byte header encodings");
    let mut hdr = cfi.hdr.clone();
    // fde_count is the 4-byte field just before the table: list one FDE less. The rows
    // still come in order, but the last FDE would be missing.
    let field = start - 4..start;
    let count = u32::from_ne_bytes(hdr[field.clone()].try_into().unwrap());
    hdr[field].copy_from_slice(&(count - 1).to_ne_bytes());
    let (table, counts) = build(&source(&cfi, &cfi.eh_frame, Some(&hdr))).unwrap();
    assert!(!counts.in_address_order);
    let (sorted, _) = build(&source(&cfi, &cfi.eh_frame, None)).unwrap();
    assert!(same_rows(&table, &sorted));
}
