//! A unit's line table, packed: its rows sorted by address, in blocks of [`BLOCK`] rows,
//! each row stored as a few bytes of differences from the row before it.
//!
//! A row as parsed takes 16 bytes (address, file, line). Packed, a row of a Rust unit
//! takes about 4: within a function consecutive rows are a few bytes of code and a few
//! lines apart, and a unit names few files. A lookup finds its block by binary search
//! over the blocks' first addresses and reads at most [`BLOCK`] rows, so it stays a
//! matter of nanoseconds while the table that the symbolizer keeps per parsed unit
//! shrinks to about a quarter.

use crate::symbolize::vec_bytes;

/// One line-table row: from `addr` on, the code is `file:line` (`file == END`: no code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) addr: u64,
    pub(crate) file: u32,
    pub(crate) line: u32,
}

/// `Row::file` of a sequence end.
pub(crate) const END: u32 = u32::MAX;

/// Rows per block: what one lookup reads at most.
const BLOCK: usize = 16;

/// Rows sorted by address, packed (see the module docs).
///
/// Per block, the first row is its file and line, each a LEB128 number (the file as
/// `file + 1`, so that [`END`] is 0), its address being the block's. Each further row is
/// its address's difference from the row before, its file, and its line's difference
/// (zigzag-encoded), all LEB128.
#[derive(Debug, Default)]
pub(crate) struct LineTable {
    /// Per block: the address of its first row and where its bytes start in `bytes`.
    blocks: Vec<(u64, usize)>,
    bytes: Vec<u8>,
}

impl LineTable {
    /// Packs `rows`, which must be sorted by address (equal addresses in any order).
    pub(crate) fn from_sorted(rows: &[Row]) -> Self {
        debug_assert!(rows.is_sorted_by_key(|r| r.addr));
        let mut blocks = Vec::with_capacity(rows.len().div_ceil(BLOCK));
        let mut bytes = Vec::with_capacity(rows.len() * 4);
        for block in rows.chunks(BLOCK) {
            blocks.push((block[0].addr, bytes.len()));
            let mut prev = Row {
                addr: block[0].addr,
                file: 0,
                line: 0,
            };
            for (i, row) in block.iter().enumerate() {
                if i > 0 {
                    put(&mut bytes, row.addr - prev.addr);
                }
                put(&mut bytes, u64::from(row.file.wrapping_add(1)));
                put(
                    &mut bytes,
                    zigzag(i64::from(row.line) - i64::from(prev.line)),
                );
                prev = *row;
            }
        }
        bytes.shrink_to_fit();
        Self { blocks, bytes }
    }

    /// Rows held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.rows().count()
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        vec_bytes(&self.blocks) + vec_bytes(&self.bytes)
    }

    /// The row covering `addr`: the last one starting at or before it (the last in
    /// table order among rows at the same address). `None` before the first row, or
    /// where a sequence ended and none started since.
    pub(crate) fn location(&self, addr: u64) -> Option<(u32, u32)> {
        let b = self
            .blocks
            .partition_point(|(start, _)| *start <= addr)
            .checked_sub(1)?;
        let mut found = None;
        for row in self.block_rows(b) {
            if row.addr > addr {
                break;
            }
            found = Some(row);
        }
        found
            .filter(|row| row.file != END)
            .map(|row| (row.file, row.line))
    }

    /// The rows of block `b`, in order.
    fn block_rows(&self, b: usize) -> impl Iterator<Item = Row> + '_ {
        let (start, from) = self.blocks[b];
        let to = self
            .blocks
            .get(b + 1)
            .map_or(self.bytes.len(), |&(_, at)| at);
        let mut bytes = &self.bytes[from..to];
        let mut prev = Row {
            addr: start,
            file: 0,
            line: 0,
        };
        let mut first = true;
        std::iter::from_fn(move || {
            if bytes.is_empty() {
                return None;
            }
            let addr = if first {
                prev.addr
            } else {
                prev.addr.wrapping_add(take(&mut bytes)?)
            };
            first = false;
            let file = (take(&mut bytes)? as u32).wrapping_sub(1);
            let line = (i64::from(prev.line) + unzigzag(take(&mut bytes)?)) as u32;
            prev = Row { addr, file, line };
            Some(prev)
        })
    }

    /// Every row, in order.
    #[cfg(test)]
    pub(crate) fn rows(&self) -> impl Iterator<Item = Row> + '_ {
        (0..self.blocks.len()).flat_map(|b| self.block_rows(b))
    }
}

/// Appends `n` as LEB128.
fn put(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Reads a LEB128 number from the front of `bytes`; `None` when it is cut off.
fn take(bytes: &mut &[u8]) -> Option<u64> {
    let mut n = 0u64;
    let mut shift = 0;
    loop {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        n |= u64::from(b & 0x7f).checked_shl(shift)?;
        if b & 0x80 == 0 {
            return Some(n);
        }
        shift += 7;
    }
}

fn zigzag(n: i64) -> u64 {
    ((n << 1) ^ (n >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row covering `addr` in plain sorted rows: what a packed table must answer.
    fn expected(rows: &[Row], addr: u64) -> Option<(u32, u32)> {
        let i = rows.partition_point(|r| r.addr <= addr).checked_sub(1)?;
        (rows[i].file != END).then_some((rows[i].file, rows[i].line))
    }

    #[test]
    fn a_packed_table_answers_every_lookup_as_the_plain_rows_do() {
        let mut next = crate::symbolize::xorshift(0x9e37_79b9_7f4a_7c15);
        for case in 0..500 {
            let mut rows = Vec::new();
            let mut addr = next(1 << 40);
            for _ in 0..next(200) {
                // Equal addresses, small and huge steps, ends, lines going back.
                addr += match next(8) {
                    0 => 0,
                    1 => next(1 << 33),
                    _ => next(64),
                };
                let file = match next(10) {
                    0 => END,
                    1 => u32::MAX - 1,
                    _ => next(300) as u32,
                };
                let line = match next(10) {
                    0 => u32::MAX,
                    1 => 0,
                    _ => next(5_000) as u32,
                };
                rows.push(Row { addr, file, line });
            }
            let table = LineTable::from_sorted(&rows);
            assert_eq!(table.len(), rows.len());
            assert_eq!(table.rows().collect::<Vec<_>>(), rows, "case {case}");
            let probes = rows
                .iter()
                .flat_map(|r| [r.addr.wrapping_sub(1), r.addr, r.addr + 1])
                .chain([0, u64::MAX]);
            for a in probes {
                assert_eq!(table.location(a), expected(&rows, a), "case {case} {a:#x}");
            }
        }
    }

    #[test]
    fn an_empty_table_finds_nothing() {
        let table = LineTable::from_sorted(&[]);
        assert_eq!(table.location(0), None);
        assert_eq!(table.location(u64::MAX), None);
        assert_eq!(table.heap_bytes(), 0);
    }

    #[test]
    fn leb128_and_zigzag_round_trip_at_their_edges() {
        for n in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put(&mut out, n);
            let mut bytes = &out[..];
            assert_eq!(take(&mut bytes), Some(n));
            assert!(bytes.is_empty());
        }
        for n in [0, 1, -1, i64::from(u32::MAX), -i64::from(u32::MAX)] {
            assert_eq!(unzigzag(zigzag(n)), n);
        }
        // Cut off, or longer than 64 bits: no number, no panic.
        assert_eq!(take(&mut &[0x80u8][..]), None);
        assert_eq!(take(&mut &[0xffu8; 11][..]), None);
    }
}
