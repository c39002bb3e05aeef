//! The compact unwind table: per loaded object, rows sorted by address, each saying how
//! to find the caller's frame from any PC up to the next row. Built off the handler
//! (`build`), read by the handler (`walk`) with binary searches only.
//!
//! A row is 8 bytes: a `u32` offset from the object's first covered address and a
//! packed [`Rule`]. Everything here that the handler calls is panic-free (`get`, no
//! indexing, no overflowing arithmetic) and allocation-free.

use std::sync::Arc;

/// Bytes of one stack slot.
pub(crate) const WORD: usize = std::mem::size_of::<usize>();

/// How the CFA (canonical frame address: the caller's SP) is found, and what else a row
/// says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// CFA = SP + offset.
    Sp = 0,
    /// CFA = FP + offset.
    Fp = 1,
    /// CFI exists but the compact form cannot express it (a DWARF expression, an
    /// unusual register or offset): walk this frame by frame pointer.
    Inexpressible = 2,
    /// No CFI covers this address (a gap between functions): frame pointer.
    Uncovered = 3,
    /// The return address is undefined: the outermost frame (thread start, `_start`).
    Outermost = 4,
}

/// One packed unwind rule: bits 0..16 the CFA offset in words, 16..20 the [`Kind`],
/// 20..26 where the caller's FP is saved (CFA - n words; 0: not saved, unchanged),
/// 26..32 where the return address is (CFA - n words; 0: still in the link register,
/// aarch64 leaf frames only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rule(u32);

const SLOT_MAX: u32 = 63;

/// Bytes per page of the lookup index: `1 << PAGE_SHIFT`.
const PAGE_SHIFT: u32 = 12;

impl Rule {
    pub(crate) const INEXPRESSIBLE: Rule = Rule((Kind::Inexpressible as u32) << 16);
    pub(crate) const UNCOVERED: Rule = Rule((Kind::Uncovered as u32) << 16);
    pub(crate) const OUTERMOST: Rule = Rule((Kind::Outermost as u32) << 16);

    /// A CFA rule `base + cfa_bytes`, the caller's FP at `CFA - fp_bytes` (0: not saved)
    /// and the return address at `CFA - ra_bytes` (0: in the link register). `None`
    /// when a value does not fit (not word-aligned, negative, too large).
    pub(crate) fn cfa(base: Kind, cfa_bytes: i64, fp_bytes: i64, ra_bytes: i64) -> Option<Rule> {
        if !matches!(base, Kind::Sp | Kind::Fp) {
            return None;
        }
        let words = |bytes: i64, max: u32| -> Option<u32> {
            let word = WORD as i64;
            if bytes < 0 || bytes % word != 0 {
                return None;
            }
            u32::try_from(bytes / word).ok().filter(|&w| w <= max)
        };
        let cfa = words(cfa_bytes, u32::from(u16::MAX))?;
        let fp = words(fp_bytes, SLOT_MAX)?;
        let ra = words(ra_bytes, SLOT_MAX)?;
        Some(Rule(cfa | (base as u32) << 16 | fp << 20 | ra << 26))
    }

    pub(crate) fn kind(self) -> Kind {
        match (self.0 >> 16) & 0xf {
            0 => Kind::Sp,
            1 => Kind::Fp,
            3 => Kind::Uncovered,
            4 => Kind::Outermost,
            _ => Kind::Inexpressible,
        }
    }

    /// CFA offset from its base register, bytes.
    pub(crate) fn cfa_offset(self) -> usize {
        (self.0 & 0xffff) as usize * WORD
    }

    /// Caller's FP at `CFA - fp_slot()` (0: not saved).
    pub(crate) fn fp_slot(self) -> usize {
        ((self.0 >> 20) & SLOT_MAX) as usize * WORD
    }

    /// Return address at `CFA - ra_slot()` (0: in the link register).
    pub(crate) fn ra_slot(self) -> usize {
        ((self.0 >> 26) & SLOT_MAX) as usize * WORD
    }
}

/// The rows of one loaded object. Immutable once built.
#[derive(Debug)]
pub(crate) struct ModuleTable {
    /// First address covered (the lowest FDE start).
    pub(crate) start: usize,
    /// One past the last covered address.
    pub(crate) end: usize,
    /// Row start addresses as offsets from `start`, strictly increasing.
    pub(crate) addrs: Box<[u32]>,
    /// The rule of each row (same length as `addrs`).
    pub(crate) rules: Box<[Rule]>,
    /// Per 4 KiB page of `start..end`: the index of the last row at or before the page's
    /// first byte. A lookup binary-searches only `pages[p] ..= pages[p + 1]` (a few rows,
    /// a few cache lines) instead of every row.
    pub(crate) pages: Box<[u32]>,
    /// Rows that fell back to [`Rule::INEXPRESSIBLE`].
    pub(crate) inexpressible: usize,
    /// The object's name (for logs and tests).
    #[allow(dead_code)]
    pub(crate) name: String,
}

impl ModuleTable {
    /// A table of `rows` (offsets from `start`, strictly increasing, the first at 0).
    pub(crate) fn new(
        start: usize,
        end: usize,
        addrs: Vec<u32>,
        rules: Vec<Rule>,
        inexpressible: usize,
        name: String,
    ) -> ModuleTable {
        let span = end.saturating_sub(start);
        let page_count = (span >> PAGE_SHIFT) + 1;
        let mut pages = Vec::with_capacity(page_count);
        let mut row = 0usize;
        for page in 0..page_count {
            let first_byte = (page << PAGE_SHIFT) as u64;
            while addrs.get(row + 1).is_some_and(|&a| u64::from(a) <= first_byte) {
                row += 1;
            }
            pages.push(row as u32);
        }
        ModuleTable {
            start,
            end,
            addrs: addrs.into_boxed_slice(),
            rules: rules.into_boxed_slice(),
            pages: pages.into_boxed_slice(),
            inexpressible,
            name,
        }
    }

    /// The rule for `pc` (inside `start..end`). Signal-safe.
    #[inline]
    pub(crate) fn lookup(&self, pc: usize) -> Rule {
        let Some(offset) = pc.checked_sub(self.start) else {
            return Rule::UNCOVERED;
        };
        let Ok(offset) = u32::try_from(offset) else {
            return Rule::UNCOVERED;
        };
        let page = (offset >> PAGE_SHIFT) as usize;
        let lo = self.pages.get(page).map_or(0, |&r| r as usize);
        let hi = self
            .pages
            .get(page + 1)
            .map_or(self.addrs.len(), |&r| (r as usize).saturating_add(1));
        let Some(window) = self.addrs.get(lo..hi) else {
            return Rule::UNCOVERED;
        };
        // Rows with an address <= offset; the last of them applies.
        let n = window.partition_point(|&a| a <= offset);
        match n
            .checked_sub(1)
            .and_then(|i| self.rules.get(lo.saturating_add(i)))
        {
            Some(rule) => *rule,
            None => Rule::UNCOVERED,
        }
    }

    /// Heap bytes of the rows and the page index.
    pub(crate) fn bytes(&self) -> usize {
        (self.addrs.len() + self.pages.len()) * std::mem::size_of::<u32>()
            + self.rules.len() * std::mem::size_of::<Rule>()
    }
}

/// Every object's table, sorted by start address, non-overlapping. Immutable once
/// published; the handler reads it through [`super::publish`].
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) modules: Box<[Arc<ModuleTable>]>,
}

impl Tables {
    /// Sorts `modules` by start and drops any that overlaps its predecessor (a stale
    /// object still listed while its replacement is loaded cannot happen with the
    /// loader's lock held, but the handler must never see overlaps either way).
    pub(crate) fn new(mut modules: Vec<Arc<ModuleTable>>) -> Tables {
        modules.sort_by_key(|m| m.start);
        let mut kept: Vec<Arc<ModuleTable>> = Vec::with_capacity(modules.len());
        for m in modules {
            if kept.last().is_some_and(|last| m.start < last.end) {
                continue;
            }
            kept.push(m);
        }
        Tables {
            modules: kept.into_boxed_slice(),
        }
    }

    /// The rule for `pc`: [`Rule::UNCOVERED`] outside every object. Signal-safe.
    #[inline]
    pub(crate) fn lookup(&self, pc: usize) -> Rule {
        let n = self.modules.partition_point(|m| m.start <= pc);
        match n.checked_sub(1).and_then(|i| self.modules.get(i)) {
            Some(m) if pc < m.end => m.lookup(pc),
            _ => Rule::UNCOVERED,
        }
    }

    /// Heap bytes of all rows.
    pub(crate) fn bytes(&self) -> usize {
        self.modules.iter().map(|m| m.bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_pack_and_unpack_and_refuse_what_does_not_fit() {
        let r = Rule::cfa(Kind::Sp, 48, 16, 8).unwrap();
        assert_eq!(r.kind(), Kind::Sp);
        assert_eq!((r.cfa_offset(), r.fp_slot(), r.ra_slot()), (48, 16, 8));
        let r = Rule::cfa(Kind::Fp, 16, 0, 8).unwrap();
        assert_eq!((r.kind(), r.cfa_offset(), r.fp_slot()), (Kind::Fp, 16, 0));
        assert_eq!(Rule::cfa(Kind::Sp, 12, 0, 8), None, "not word-aligned");
        assert_eq!(Rule::cfa(Kind::Sp, -8, 0, 8), None, "negative");
        assert_eq!(Rule::cfa(Kind::Sp, 8 << 17, 0, 8), None, "too large");
        assert_eq!(Rule::cfa(Kind::Sp, 8, 64 * 8, 8), None, "slot too far");
        assert_eq!(Rule::cfa(Kind::Outermost, 8, 0, 8), None);
        assert_eq!(Rule::INEXPRESSIBLE.kind(), Kind::Inexpressible);
        assert_eq!(Rule::UNCOVERED.kind(), Kind::Uncovered);
        assert_eq!(Rule::OUTERMOST.kind(), Kind::Outermost);
    }

    fn module(start: usize, end: usize, rows: &[(u32, Rule)]) -> Arc<ModuleTable> {
        Arc::new(ModuleTable::new(
            start,
            end,
            rows.iter().map(|r| r.0).collect(),
            rows.iter().map(|r| r.1).collect(),
            0,
            String::new(),
        ))
    }

    #[test]
    fn the_page_index_finds_the_same_rule_as_a_search_of_every_row() {
        // Rows at irregular offsets across several pages, some pages without a row.
        let mut rows = Vec::new();
        let mut at = 0u32;
        let mut k = 0;
        while at < 5 * 4096 {
            rows.push((at, Rule::cfa(Kind::Sp, 8 * (k % 7 + 1), 0, 8).unwrap()));
            at += [1, 3, 700, 4096, 9000, 17][k as usize % 6];
            k += 1;
        }
        rows.push((at, Rule::UNCOVERED));
        let table = module(0x10000, 0x10000 + at as usize, &rows);
        for offset in 0..at + 10 {
            let expected = rows
                .iter()
                .rev()
                .find(|r| r.0 <= offset)
                .map_or(Rule::UNCOVERED, |r| r.1);
            assert_eq!(table.lookup(0x10000 + offset as usize), expected, "{offset:#x}");
        }
    }

    #[test]
    fn lookup_finds_the_last_row_at_or_below_the_address_in_the_right_object() {
        let a = Rule::cfa(Kind::Sp, 8, 0, 8).unwrap();
        let b = Rule::cfa(Kind::Sp, 16, 16, 8).unwrap();
        let c = Rule::cfa(Kind::Fp, 16, 16, 8).unwrap();
        let tables = Tables::new(vec![
            module(0x5000, 0x6000, &[(0, a), (0x10, Rule::UNCOVERED)]),
            module(
                0x1000,
                0x2000,
                &[(0, a), (1, b), (4, c), (0x100, Rule::UNCOVERED)],
            ),
            // Overlaps the first one: dropped.
            module(0x1800, 0x2800, &[(0, Rule::OUTERMOST)]),
        ]);
        assert_eq!(tables.modules.len(), 2);
        assert_eq!(tables.lookup(0xfff), Rule::UNCOVERED);
        assert_eq!(tables.lookup(0x1000), a);
        assert_eq!(tables.lookup(0x1001), b);
        assert_eq!(tables.lookup(0x1003), b);
        assert_eq!(tables.lookup(0x1004), c);
        assert_eq!(tables.lookup(0x10ff), c);
        assert_eq!(tables.lookup(0x1100), Rule::UNCOVERED);
        assert_eq!(tables.lookup(0x1900), Rule::UNCOVERED);
        assert_eq!(tables.lookup(0x2000), Rule::UNCOVERED);
        assert_eq!(tables.lookup(0x5008), a);
        assert_eq!(tables.lookup(usize::MAX), Rule::UNCOVERED);
        // 6 rows of 8 bytes, 2 pages of 4 bytes in each of the two objects.
        assert_eq!(tables.bytes(), 6 * 8 + 4 * 4);
    }
}
