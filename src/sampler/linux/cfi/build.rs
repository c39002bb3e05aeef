//! Compiles one object's `.eh_frame` into a [`ModuleTable`] with gimli's CFI reader.
//! Runs on the collector thread, never in the handler.
//!
//! Every FDE is evaluated row by row; each row becomes a compact [`Rule`] or, when the
//! compact form cannot say it, [`Rule::INEXPRESSIBLE`] (the walk then uses the frame
//! pointer for that frame). Malformed input is an error for the whole object (which
//! then unwinds by frame pointer, counted by the caller), never a panic.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, EhFrameHdr, EhFrameOffset, EndianSlice, FrameDescriptionEntry,
    NativeEndian, Register, RegisterRule, UnwindContext, UnwindSection,
};

use super::table::{Kind, ModuleTable, Rule};

#[cfg(target_arch = "x86_64")]
mod regs {
    use gimli::Register;
    pub(super) const SP: Register = gimli::X86_64::RSP;
    pub(super) const FP: Register = gimli::X86_64::RBP;
    pub(super) const RA: Register = gimli::X86_64::RA;
    /// Where the return address is when a row does not say (x86_64: the `call` pushed
    /// it just below the CFA).
    pub(super) const RA_DEFAULT: Option<i64> = Some(-8);
}

#[cfg(target_arch = "aarch64")]
mod regs {
    use gimli::Register;
    pub const SP: Register = gimli::AArch64::SP;
    pub const FP: Register = gimli::AArch64::X29;
    pub const RA: Register = gimli::AArch64::X30;
    /// aarch64: a row that does not save x30 leaves the return address in it.
    pub const RA_DEFAULT: Option<i64> = None;
}

/// Why an object has no table.
#[derive(Debug)]
pub(crate) enum BuildError {
    /// gimli refused the CFI (truncated, garbage, unsupported encoding).
    Malformed(gimli::Error),
    /// The object's covered range does not fit the compact form (more than 4 GiB).
    TooLarge,
    /// No FDE inside the object's executable segments.
    Empty,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BuildError::Malformed(err) => write!(f, "malformed .eh_frame: {err}"),
            BuildError::TooLarge => f.write_str("unwind rows span more than 4 GiB"),
            BuildError::Empty => f.write_str("no unwind rows inside executable segments"),
        }
    }
}

impl From<gimli::Error> for BuildError {
    fn from(err: gimli::Error) -> Self {
        BuildError::Malformed(err)
    }
}

/// Where an object's CFI is, in this process's memory.
pub(crate) struct Source<'a> {
    pub(crate) name: &'a str,
    /// `.eh_frame` (may run past its end up to the end of its segment: a zero length
    /// terminates it).
    pub(crate) eh_frame: &'a [u8],
    /// Run-time address of `eh_frame[0]`.
    pub(crate) eh_frame_addr: u64,
    /// `.eh_frame_hdr`, if known: its run-time address (the base of `datarel` pointers)
    /// and its bytes, whose search table lists the FDEs sorted by address.
    pub(crate) eh_frame_hdr: Option<(u64, &'a [u8])>,
    /// The object's executable segments at run time: FDEs outside them are ignored.
    pub(crate) text: &'a [(usize, usize)],
}

/// What one build did besides the table.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BuildCounts {
    /// FDEs whose range lies outside every executable segment (ignored).
    pub(crate) fdes_outside_text: u64,
    /// Rows starting outside their own FDE's range (ignored): only malformed CFI makes
    /// them (`DW_CFA_set_loc` or an advance past the FDE's end), and such a row would
    /// otherwise override the "uncovered" mark at the FDE's end, or land between
    /// executable segments.
    pub(crate) rows_outside_fde: u64,
    /// Whether the rows came in address order through `.eh_frame_hdr`'s table. When
    /// they do not (no table, overlapping FDEs), every row is collected and sorted.
    #[cfg_attr(not(test), allow(dead_code, reason = "tests check which way a table was built"))]
    pub(crate) in_address_order: bool,
}

/// Compiles `source` into a table.
///
/// The FDEs are first read in the order of `.eh_frame_hdr`'s table, which sorts them by
/// address: their rows then come sorted and go straight into the table's columns. Only
/// when that order breaks (overlapping FDEs, no table) are all rows collected and
/// sorted. Besides saving the work, this keeps the build from allocating and freeing a
/// list of every row and a sort's scratch (together 3 MiB for a 35 MB service): freeing
/// blocks that large raises glibc's mmap and trim thresholds for the whole process, so
/// that every arena may then keep megabytes of free memory it would otherwise return.
pub(crate) fn build(source: &Source<'_>) -> Result<(ModuleTable, BuildCounts), BuildError> {
    let cfi = Cfi::new(source);
    // Any error there (a damaged table included) is reported by the section-order
    // build, which reads `.eh_frame` itself.
    if let Some(built) = cfi.in_address_order() {
        return Ok(built);
    }
    cfi.in_section_order()
}

/// One object's CFI as gimli reads it.
struct Cfi<'a> {
    source: &'a Source<'a>,
    eh_frame: EhFrame<EndianSlice<'a, NativeEndian>>,
    bases: BaseAddresses,
}

impl<'a> Cfi<'a> {
    fn new(source: &'a Source<'a>) -> Cfi<'a> {
        let mut eh_frame = EhFrame::new(source.eh_frame, NativeEndian);
        eh_frame.set_address_size(std::mem::size_of::<usize>() as u8);
        #[cfg(target_arch = "aarch64")]
        eh_frame.set_vendor(gimli::Vendor::AArch64);
        let mut bases = BaseAddresses::default().set_eh_frame(source.eh_frame_addr);
        if let Some((hdr, _)) = source.eh_frame_hdr {
            bases = bases.set_eh_frame_hdr(hdr);
        }
        Cfi {
            source,
            eh_frame,
            bases,
        }
    }

    /// Builds from the FDEs in `.eh_frame_hdr`'s order; `None` if there is no usable
    /// table, the rows do not come sorted, or anything fails to parse.
    fn in_address_order(&self) -> Option<(ModuleTable, BuildCounts)> {
        let (_, hdr_bytes) = self.source.eh_frame_hdr?;
        let address_size = std::mem::size_of::<usize>() as u8;
        let hdr = EhFrameHdr::new(hdr_bytes, NativeEndian)
            .parse(&self.bases, address_size)
            .ok()?;
        // The table's FDE pointers are offsets from the `.eh_frame` it names.
        if hdr.eh_frame_ptr().direct().ok() != Some(self.source.eh_frame_addr) {
            return None;
        }
        let table = hdr.table()?;
        let mut ctx = Box::new(UnwindContext::new());
        let mut counts = BuildCounts {
            in_address_order: true,
            ..BuildCounts::default()
        };
        let mut columns = Columns::default();
        let mut sorted = true;
        let mut listed = 0u64;
        let mut entries = table.iter(&self.bases);
        while let Some((_, fde_ptr)) = entries.next().ok()? {
            listed += 1;
            // Not `pointer_to_offset`: it underflows (panics) on a pointer below
            // `.eh_frame`, which a damaged table can hold.
            let offset = fde_ptr
                .direct()
                .ok()?
                .checked_sub(self.source.eh_frame_addr)
                .and_then(|o| usize::try_from(o).ok())?;
            let offset = EhFrameOffset(offset);
            let fde = self
                .eh_frame
                .fde_from_offset(&self.bases, offset, EhFrame::cie_from_offset)
                .ok()?;
            self.rows(&fde, &mut ctx, &mut counts, |addr, order, rule| {
                sorted = sorted && columns.push(addr, order, rule);
                sorted
            })
            .ok()?;
            if !sorted {
                return None;
            }
        }
        // A table that lists each FDE once, in order, lists as many as the section has
        // (a cheap walk: FDEs are counted, not parsed).
        if listed != self.fde_count().ok()? {
            return None;
        }
        let table = columns.finish(self.source.name).ok()?;
        Some((table, counts))
    }

    /// How many FDEs `.eh_frame` holds.
    fn fde_count(&self) -> Result<u64, BuildError> {
        let mut count = 0;
        let mut entries = self.eh_frame.entries(&self.bases);
        while let Some(entry) = entries.next()? {
            count += u64::from(matches!(entry, CieOrFde::Fde(_)));
        }
        Ok(count)
    }

    /// Builds from every FDE in section order: collects all rows and sorts them.
    fn in_section_order(&self) -> Result<(ModuleTable, BuildCounts), BuildError> {
        let mut ctx = Box::new(UnwindContext::new());
        let mut counts = BuildCounts::default();
        let mut rows: Vec<(u64, u8, Rule)> = Vec::new();
        let mut entries = self.eh_frame.entries(&self.bases);
        while let Some(entry) = entries.next()? {
            let CieOrFde::Fde(partial) = entry else {
                continue;
            };
            let fde = partial.parse(EhFrame::cie_from_offset)?;
            self.rows(&fde, &mut ctx, &mut counts, |addr, order, rule| {
                rows.push((addr, order, rule));
                true
            })?;
        }
        rows.sort_by_key(|&(addr, order, _)| (addr, order));
        let mut columns = Columns::default();
        for (addr, order, rule) in rows {
            let in_order = columns.push(addr, order, rule);
            debug_assert!(in_order, "sorted rows are never refused");
        }
        Ok((columns.finish(self.source.name)?, counts))
    }

    /// Evaluates one FDE and hands each row to `emit` as (address, 0 for the FDE's end /
    /// 1 for a row, rule): ends sort before a row that starts at the same address, so
    /// the row wins. Stops early when `emit` returns false.
    fn rows(
        &self,
        fde: &FrameDescriptionEntry<EndianSlice<'a, NativeEndian>>,
        ctx: &mut UnwindContext<usize>,
        counts: &mut BuildCounts,
        mut emit: impl FnMut(u64, u8, Rule) -> bool,
    ) -> Result<(), BuildError> {
        let (start, end) = (fde.initial_address(), fde.end_address());
        let inside = self
            .source
            .text
            .iter()
            .any(|&(lo, hi)| lo as u64 <= start && start < end && end <= hi as u64);
        if !inside {
            counts.fdes_outside_text += 1;
            return Ok(());
        }
        let ra_register = fde.cie().return_address_register();
        let trampoline = fde.is_signal_trampoline();
        let mut table = fde.rows(&self.eh_frame, &self.bases, ctx)?;
        while let Some(row) = table.next_row()? {
            if !(start..end).contains(&row.start_address()) {
                counts.rows_outside_fde += 1;
                continue;
            }
            let rule = if trampoline || ra_register != regs::RA {
                Rule::INEXPRESSIBLE
            } else {
                compact(row.cfa(), |r| row.register(r))
            };
            if !emit(row.start_address(), 1, rule) {
                return Ok(());
            }
        }
        emit(end, 0, Rule::UNCOVERED);
        Ok(())
    }
}

/// One gimli row as a compact rule.
fn compact<T: gimli::ReaderOffset>(
    cfa: &CfaRule<T>,
    register: impl Fn(Register) -> Option<RegisterRule<T>>,
) -> Rule {
    let (base, offset) = match *cfa {
        CfaRule::RegisterAndOffset { register, offset } if register == regs::SP => {
            (Kind::Sp, offset)
        }
        CfaRule::RegisterAndOffset { register, offset } if register == regs::FP => {
            (Kind::Fp, offset)
        }
        _ => return Rule::INEXPRESSIBLE,
    };
    let ra = match register(regs::RA) {
        Some(RegisterRule::Undefined) => return Rule::OUTERMOST,
        Some(RegisterRule::Offset(n)) if n < 0 => -n,
        None | Some(RegisterRule::SameValue) => match regs::RA_DEFAULT {
            Some(n) => -n,
            None => 0,
        },
        Some(_) => return Rule::INEXPRESSIBLE,
    };
    let fp = match register(regs::FP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => 0,
        Some(RegisterRule::Offset(n)) if n < 0 => -n,
        Some(_) => return Rule::INEXPRESSIBLE,
    };
    Rule::cfa(base, offset, fp, ra).unwrap_or(Rule::INEXPRESSIBLE)
}

/// A table's columns, filled from rows sorted by (address, order) as they come: of
/// several rows at one address the last applies, and a row repeating the rule before
/// it is left out.
#[derive(Default)]
struct Columns {
    /// The first row's address (the table's start; offsets are relative to it).
    start: u64,
    /// The last row seen, kept until a row at a higher address shows it applies.
    pending: Option<(u64, u8, Rule)>,
    addrs: Vec<u32>,
    rules: Vec<Rule>,
}

impl Columns {
    /// Adds a row; false (and nothing added) if it sorts before the previous one.
    fn push(&mut self, addr: u64, order: u8, rule: Rule) -> bool {
        match self.pending {
            Some((last, last_order, _)) if (addr, order) < (last, last_order) => return false,
            Some((last, _, last_rule)) if addr != last => self.commit(last, last_rule),
            Some(_) => {}
            None => self.start = addr,
        }
        self.pending = Some((addr, order, rule));
        true
    }

    fn commit(&mut self, addr: u64, rule: Rule) {
        if self.rules.last() == Some(&rule) {
            return;
        }
        // An offset past `u32` means the table's end is too, which `finish` reports.
        if let Ok(offset) = u32::try_from(addr - self.start) {
            self.addrs.push(offset);
            self.rules.push(rule);
        }
    }

    fn finish(mut self, name: &str) -> Result<ModuleTable, BuildError> {
        let Some((end, _, rule)) = self.pending else {
            return Err(BuildError::Empty);
        };
        self.commit(end, rule);
        if end - self.start > u64::from(u32::MAX) {
            return Err(BuildError::TooLarge);
        }
        let inexpressible = self
            .rules
            .iter()
            .filter(|r| **r == Rule::INEXPRESSIBLE)
            .count();
        Ok(ModuleTable::new(
            self.start as usize,
            end as usize,
            self.addrs,
            self.rules,
            inexpressible,
            name.to_string(),
        ))
    }
}

#[cfg(test)]
mod tests;
