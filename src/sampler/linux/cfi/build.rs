//! Compiles one object's `.eh_frame` into a [`ModuleTable`] with gimli's CFI reader.
//! Runs on the collector thread, never in the handler.
//!
//! Every FDE is evaluated row by row; each row becomes a compact [`Rule`] or, when the
//! compact form cannot say it, [`Rule::INEXPRESSIBLE`] (the walk then uses the frame
//! pointer for that frame). Malformed input is an error for the whole object (which
//! then unwinds by frame pointer, counted by the caller), never a panic.

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, EhFrame, NativeEndian, Register, RegisterRule, UnwindContext,
    UnwindSection,
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
    /// Run-time address of `.eh_frame_hdr` (base of `datarel` pointers), if known.
    pub(crate) eh_frame_hdr_addr: Option<u64>,
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
}

/// Compiles `source` into a table.
pub(crate) fn build(source: &Source<'_>) -> Result<(ModuleTable, BuildCounts), BuildError> {
    let mut eh_frame = EhFrame::new(source.eh_frame, NativeEndian);
    eh_frame.set_address_size(std::mem::size_of::<usize>() as u8);
    #[cfg(target_arch = "aarch64")]
    eh_frame.set_vendor(gimli::Vendor::AArch64);
    let mut bases = BaseAddresses::default().set_eh_frame(source.eh_frame_addr);
    if let Some(hdr) = source.eh_frame_hdr_addr {
        bases = bases.set_eh_frame_hdr(hdr);
    }
    let mut ctx = Box::new(UnwindContext::new());
    let mut counts = BuildCounts::default();
    // (address, 0 for an FDE's end / 1 for a row, rule): ends sort before a row that
    // starts at the same address, so the row wins.
    let mut rows: Vec<(u64, u8, Rule)> = Vec::new();
    let mut entries = eh_frame.entries(&bases);
    while let Some(entry) = entries.next()? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let fde = partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))?;
        let (start, end) = (fde.initial_address(), fde.end_address());
        let inside = source
            .text
            .iter()
            .any(|&(lo, hi)| lo as u64 <= start && start < end && end <= hi as u64);
        if !inside {
            counts.fdes_outside_text += 1;
            continue;
        }
        let ra_register = fde.cie().return_address_register();
        let trampoline = fde.is_signal_trampoline();
        let mut table = fde.rows(&eh_frame, &bases, &mut ctx)?;
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
            rows.push((row.start_address(), 1, rule));
        }
        rows.push((end, 0, Rule::UNCOVERED));
    }
    finish(source.name, rows, counts)
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

/// Sorts and compresses the rows into a table.
fn finish(
    name: &str,
    mut rows: Vec<(u64, u8, Rule)>,
    counts: BuildCounts,
) -> Result<(ModuleTable, BuildCounts), BuildError> {
    rows.sort_by_key(|&(addr, order, _)| (addr, order));
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Err(BuildError::Empty);
    };
    let (start, end) = (first.0, last.0);
    if end - start > u64::from(u32::MAX) {
        return Err(BuildError::TooLarge);
    }
    let mut addrs: Vec<u32> = Vec::with_capacity(rows.len());
    let mut rules: Vec<Rule> = Vec::with_capacity(rows.len());
    for (i, &(addr, _, rule)) in rows.iter().enumerate() {
        // Of several rows at one address, the last (sorted) one applies.
        if rows.get(i + 1).is_some_and(|next| next.0 == addr) {
            continue;
        }
        if rules.last() == Some(&rule) {
            continue;
        }
        addrs.push((addr - start) as u32);
        rules.push(rule);
    }
    let inexpressible = rules.iter().filter(|r| **r == Rule::INEXPRESSIBLE).count();
    let table = ModuleTable::new(
        start as usize,
        end as usize,
        addrs,
        rules,
        inexpressible,
        name.to_string(),
    );
    Ok((table, counts))
}

#[cfg(test)]
mod tests;
