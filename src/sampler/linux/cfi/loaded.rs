//! Finds each loaded object's CFI in this process's memory (`PT_GNU_EH_FRAME` ->
//! `.eh_frame_hdr` -> `.eh_frame`, the vDSO included) and compiles it, reusing the
//! tables of objects that are still loaded. Collector thread only: the loader's list is
//! walked with the loader's lock held (`modules::for_each_object`), and building
//! allocates.
//!
//! Tables are built inside that walk, while the loader's lock is held: no `dlclose` can
//! unmap an object we are reading. (Other threads' `dlopen`,
//! `dlclose` and `dl_iterate_phdr` wait meanwhile; only objects new since the last
//! build are compiled.)

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use gimli::{EhFrameHdr, NativeEndian};

use super::build::{self, BuildError, Source};
use super::table::ModuleTable;
use crate::modules::{for_each_object, LoadedObject};

/// `PF_X` / `PF_R` segment flags (elf.h).
const PF_X: u32 = 1;
const PF_R: u32 = 4;

/// The loader's counters of objects added and removed since the process started.
/// They change exactly when the set of loaded objects changes.
pub(crate) fn generation() -> (u64, u64) {
    let mut out = (0, 0);
    for_each_object(|object| {
        out = object.generation.unwrap_or_default();
        ControlFlow::Break(())
    });
    out
}

/// What identifies an object between builds: its load bias, where its
/// `.eh_frame_hdr` is, and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    bias: usize,
    hdr: usize,
    hdr_len: usize,
    name: String,
}

/// Per object, the outcome of its last build.
type Built = Result<Arc<ModuleTable>, String>;

/// Tables of the objects loaded at the last [`Loaded::refresh`].
#[derive(Default)]
pub(crate) struct Loaded {
    cache: HashMap<Key, Built>,
}

/// What a refresh found.
#[derive(Default, Debug, Clone)]
pub(crate) struct Refresh {
    /// Tables of every object that has one, this refresh.
    pub(crate) tables: Vec<Arc<ModuleTable>>,
    /// Objects compiled now (not reused).
    pub(crate) built: u64,
    /// Objects without `PT_GNU_EH_FRAME`.
    pub(crate) without_cfi: u64,
    /// Objects whose CFI could not be used (malformed, too large): frame pointers there.
    pub(crate) failed: Vec<(String, String)>,
    /// FDEs ignored because they lie outside their object's executable segments.
    pub(crate) fdes_outside_text: u64,
    /// Rows ignored because they start outside their own FDE (malformed CFI).
    pub(crate) rows_outside_fde: u64,
}

impl Loaded {
    /// Lists the loaded objects and compiles those not seen before.
    pub(crate) fn refresh(&mut self) -> Refresh {
        let old = &mut self.cache;
        let mut new = HashMap::new();
        let mut refresh = Refresh::default();
        let mut first = true;
        for_each_object(|object| {
            let main = std::mem::take(&mut first);
            // SAFETY: `for_each_object` holds the loader's lock while this runs, so the
            // object's segments stay mapped.
            unsafe { visit_object(object, main, old, &mut new, &mut refresh) };
            ControlFlow::Continue(())
        });
        refresh.tables = new
            .values()
            .filter_map(|b| b.as_ref().ok().cloned())
            .collect();
        for (key, built) in &new {
            if let Err(reason) = built {
                refresh.failed.push((key.name.clone(), reason.clone()));
            }
        }
        // Objects no longer loaded are forgotten here (their rows live on in published
        // tables until those are retired).
        self.cache = new;
        refresh
    }
}

/// One object: reuse its table or compile it.
///
/// # Safety
/// `object`'s segments are mapped for the call (the loader's lock is held).
unsafe fn visit_object(
    object: &LoadedObject<'_>,
    main: bool,
    old: &mut HashMap<Key, Built>,
    new: &mut HashMap<Key, Built>,
    refresh: &mut Refresh,
) {
    let phdrs = object.phdrs;
    let name = if main && object.name.is_empty() {
        "[main program]".to_string()
    } else {
        object.name.to_string_lossy().into_owned()
    };
    let bias = object.bias;
    let Some(hdr) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) else {
        refresh.without_cfi += 1;
        return;
    };
    let key = Key {
        bias,
        hdr: bias.wrapping_add(hdr.p_vaddr as usize),
        hdr_len: hdr.p_memsz as usize,
        name,
    };
    if let Some(built) = old.remove(&key) {
        new.insert(key, built);
        return;
    }
    // Readable PT_LOAD segments at run time: (start, end, executable).
    let segments: Vec<(usize, usize, bool)> = phdrs
        .iter()
        .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & PF_R != 0 && p.p_memsz > 0)
        .map(|p| {
            let start = bias.wrapping_add(p.p_vaddr as usize);
            (
                start,
                start.saturating_add(p.p_memsz as usize),
                p.p_flags & PF_X != 0,
            )
        })
        .collect();
    // SAFETY: the segments are mapped and readable (loader's lock held).
    let built = unsafe { build_object(&key, &segments) };
    refresh.built += 1;
    let built = match built {
        Ok((table, counts)) => {
            refresh.fdes_outside_text += counts.fdes_outside_text;
            refresh.rows_outside_fde += counts.rows_outside_fde;
            Ok(Arc::new(table))
        }
        Err(err) => Err(err),
    };
    new.insert(key, built);
}

/// Finds `.eh_frame` through `.eh_frame_hdr` and compiles it.
///
/// # Safety
/// Every range in `segments` is mapped and readable for the call.
unsafe fn build_object(
    key: &Key,
    segments: &[(usize, usize, bool)],
) -> Result<(ModuleTable, build::BuildCounts), String> {
    let containing = |addr: usize, len: usize| {
        segments
            .iter()
            .find(|&&(lo, hi, _)| lo <= addr && addr.checked_add(len).is_some_and(|e| e <= hi))
            .copied()
    };
    if containing(key.hdr, key.hdr_len).is_none() || key.hdr_len < 4 {
        return Err(".eh_frame_hdr is not inside a readable segment".into());
    }
    // SAFETY: inside a readable segment (checked above; the caller's guarantee).
    let hdr_bytes = unsafe { std::slice::from_raw_parts(key.hdr as *const u8, key.hdr_len) };
    let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(key.hdr as u64);
    let parsed = EhFrameHdr::new(hdr_bytes, NativeEndian)
        .parse(&bases, std::mem::size_of::<usize>() as u8)
        .map_err(|e| format!("malformed .eh_frame_hdr: {e}"))?;
    let eh_frame = parsed
        .eh_frame_ptr()
        .direct()
        .map_err(|e| format!("malformed .eh_frame_hdr: {e}"))? as usize;
    let Some((_, seg_end, _)) = containing(eh_frame, 1) else {
        return Err(".eh_frame is not inside a readable segment".into());
    };
    // SAFETY: `eh_frame .. seg_end` lies inside one readable segment.
    let bytes = unsafe { std::slice::from_raw_parts(eh_frame as *const u8, seg_end - eh_frame) };
    let text: Vec<(usize, usize)> = segments
        .iter()
        .filter(|s| s.2)
        .map(|&(lo, hi, _)| (lo, hi))
        .collect();
    let source = Source {
        name: &key.name,
        eh_frame: bytes,
        eh_frame_addr: eh_frame as u64,
        eh_frame_hdr: Some((key.hdr as u64, hdr_bytes)),
        text: &text,
    };
    build::build(&source).map_err(|e: BuildError| e.to_string())
}

/// A copy of one loaded object's CFI, for tests (they damage and rebuild it).
#[cfg(test)]
pub(crate) struct CopiedCfi {
    pub(crate) name: String,
    /// `.eh_frame`, to its segment's end.
    pub(crate) eh_frame: Vec<u8>,
    /// Run-time address of `.eh_frame`.
    pub(crate) eh_frame_addr: u64,
    /// Run-time address of `.eh_frame_hdr`.
    pub(crate) hdr_addr: u64,
    /// `.eh_frame_hdr`.
    pub(crate) hdr: Vec<u8>,
    /// The executable segments.
    pub(crate) text: Vec<(usize, usize)>,
}

/// Copies of every loaded object's CFI (the main program first).
#[cfg(test)]
pub(crate) fn loaded_cfi() -> Vec<CopiedCfi> {
    let mut out = Vec::new();
    for_each_object(|object| {
        let (phdrs, bias) = (object.phdrs, object.bias);
        let Some(hdr) = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_EH_FRAME) else {
            return ControlFlow::Continue(());
        };
        let segments: Vec<(usize, usize, bool)> = phdrs
            .iter()
            .filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & PF_R != 0)
            .map(|p| {
                let start = bias + p.p_vaddr as usize;
                (start, start + p.p_memsz as usize, p.p_flags & PF_X != 0)
            })
            .collect();
        let hdr_addr = bias + hdr.p_vaddr as usize;
        // SAFETY: the header lies in a loaded segment (the loader's lock is held).
        let hdr_bytes =
            unsafe { std::slice::from_raw_parts(hdr_addr as *const u8, hdr.p_memsz as usize) };
        let bases = gimli::BaseAddresses::default().set_eh_frame_hdr(hdr_addr as u64);
        let parsed = EhFrameHdr::new(hdr_bytes, NativeEndian)
            .parse(&bases, 8)
            .unwrap();
        let eh_frame = parsed.eh_frame_ptr().direct().unwrap() as usize;
        let end = segments
            .iter()
            .find(|s| s.0 <= eh_frame && eh_frame < s.1)
            .unwrap()
            .1;
        // SAFETY: inside one loaded segment.
        let bytes = unsafe { std::slice::from_raw_parts(eh_frame as *const u8, end - eh_frame) };
        out.push(CopiedCfi {
            name: object.name.to_string_lossy().into_owned(),
            eh_frame: bytes.to_vec(),
            eh_frame_addr: eh_frame as u64,
            hdr_addr: hdr_addr as u64,
            hdr: hdr_bytes.to_vec(),
            text: segments.iter().filter(|s| s.2).map(|s| (s.0, s.1)).collect(),
        });
        ControlFlow::Continue(())
    });
    assert!(!out.is_empty(), "the loader lists the main program");
    out
}
