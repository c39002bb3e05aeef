//! `MapVec`: a growable array of `Copy` values in an anonymous memory mapping of its own,
//! for large lists that live for one job: a unit parse's line rows in the symbolizer, a
//! window's tables and encoded bytes in the pprof encoder.
//!
//! Two things of glibc's malloc make such lists costly there. A large request (128 KiB at
//! first) is served with a mapping, and when such a block is freed malloc raises its mmap
//! threshold to the block's size and its trim threshold to twice that, for the whole
//! process and for good: from then on every arena, the application's included, may keep
//! that much free memory resident. And a list that grows by doubling passes through every
//! small size on the way; each freed small block goes to the freeing thread's cache
//! (tcache, up to 7 blocks of each size), which malloc counts as in use, so the pages
//! those blocks sit on stay resident after `malloc_trim`. A mapping made and unmapped here
//! is invisible to malloc.
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Bytes of the first mapping (one page).
const FIRST_BYTES: usize = 4096;

/// A growable array of `T` in an anonymous mapping (see the module docs). Grows by
/// doubling with `mremap`; unmapped on drop.
pub(crate) struct MapVec<T: Copy> {
    /// The mapping's start; dangling while `cap == 0`.
    ptr: NonNull<T>,
    /// Elements written, all at the start of the mapping: `len <= cap`.
    len: usize,
    /// Elements the mapping holds.
    cap: usize,
    /// The mapping's length in bytes (0: none).
    bytes: usize,
}

// SAFETY: a `MapVec` owns its mapping as a `Vec` owns its buffer; nothing else refers to it.
unsafe impl<T: Copy + Send> Send for MapVec<T> {}

impl<T: Copy> MapVec<T> {
    /// An empty array (no mapping yet).
    pub(crate) fn new() -> Self {
        const { assert!(std::mem::size_of::<T>() > 0 && std::mem::align_of::<T>() <= FIRST_BYTES) };
        Self {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
            bytes: 0,
        }
    }

    /// `len` copies of `value`.
    pub(crate) fn filled(len: usize, value: T) -> Self {
        let mut array = Self::new();
        while array.cap < len {
            array.grow();
        }
        for _ in 0..len {
            array.push(value);
        }
        array
    }

    pub(crate) fn push(&mut self, value: T) {
        if self.len == self.cap {
            self.grow();
        }
        // SAFETY: `len < cap` after `grow`, and the mapping holds `cap` writable elements.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
    }

    /// Appends `values`.
    pub(crate) fn extend_from_slice(&mut self, values: &[T]) {
        while self.cap - self.len < values.len() {
            self.grow();
        }
        // SAFETY: the mapping holds `cap >= len + values.len()` writable elements, and
        // `values` cannot overlap it (only `&mut self` reaches the mapping).
        unsafe {
            std::ptr::copy_nonoverlapping(
                values.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                values.len(),
            )
        };
        self.len += values.len();
    }

    /// Keeps the first `len` elements (all of them if there are fewer); the mapping stays.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Doubles the mapping (or makes the first). Out of memory aborts, as for a `Vec`.
    fn grow(&mut self) {
        let size = std::mem::size_of::<T>();
        let new_bytes = match self.bytes {
            0 => FIRST_BYTES.max(size),
            n => n.saturating_mul(2),
        };
        let mapped = if self.bytes == 0 {
            // SAFETY: a new private anonymous mapping; no existing memory is touched.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    new_bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            }
        } else {
            // SAFETY: `ptr` is the start of this array's own mapping of `self.bytes`;
            // `MREMAP_MAYMOVE` keeps its contents, and only `self` refers to it.
            unsafe {
                libc::mremap(
                    self.ptr.as_ptr().cast(),
                    self.bytes,
                    new_bytes,
                    libc::MREMAP_MAYMOVE,
                )
            }
        };
        match NonNull::new(mapped.cast::<T>()).filter(|_| mapped != libc::MAP_FAILED) {
            Some(ptr) => {
                self.ptr = ptr;
                self.bytes = new_bytes;
                self.cap = new_bytes / size;
            }
            None => std::alloc::handle_alloc_error(std::alloc::Layout::new::<T>()),
        }
    }
}

impl<T: Copy> Deref for MapVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` elements are written; `ptr` is dangling (and aligned)
        // only while `len == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> DerefMut for MapVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for MapVec<T> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            // SAFETY: the array's own mapping of `bytes`; nothing refers to it after this.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_growth_and_sort_in_place() {
        let mut rows: MapVec<(u64, u32)> = MapVec::new();
        assert!(rows.is_empty());
        // Past several doublings (16 bytes a row, a first page of 256 rows).
        for i in 0..100_000u32 {
            rows.push((u64::from(i.wrapping_mul(2_654_435_761) % 1_000), i));
        }
        assert_eq!(rows.len(), 100_000);
        assert_eq!(rows[99_999].1, 99_999);
        rows.sort_unstable();
        assert!(rows.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(
            rows.iter().map(|r| u64::from(r.1)).sum::<u64>(),
            99_999 * 100_000 / 2
        );
    }

    #[test]
    fn extending_copies_every_value_across_growth() {
        let mut out: MapVec<u32> = MapVec::new();
        let values: Vec<u32> = (0..5_000).collect();
        out.extend_from_slice(&[]);
        assert_eq!(out.cap, 0, "nothing to copy maps nothing");
        out.push(u32::MAX);
        // One copy far past the first page, then small ones.
        out.extend_from_slice(&values);
        out.extend_from_slice(&values[..3]);
        assert_eq!(out.len(), 1 + 5_000 + 3);
        assert_eq!(out[0], u32::MAX);
        assert_eq!(&out[1..5_001], &values[..]);
        assert_eq!(&out[5_001..], &[0, 1, 2]);
    }

    #[test]
    fn a_filled_array_holds_its_values_and_truncation_keeps_a_prefix() {
        let mut ids = MapVec::filled(3_000, 7u32);
        assert_eq!(ids.len(), 3_000);
        assert!(ids.iter().all(|&v| v == 7));
        ids[5] = 1;
        ids.truncate(6);
        assert_eq!(&ids[..], &[7, 7, 7, 7, 7, 1]);
        ids.truncate(100);
        assert_eq!(ids.len(), 6, "truncating past the end changes nothing");
        ids.truncate(0);
        assert!(ids.is_empty());
        ids.push(2);
        assert_eq!(&ids[..], &[2]);
        assert!(MapVec::filled(0, 0u8).is_empty());
    }

    #[test]
    fn an_array_maps_nothing_until_its_first_push_and_unmaps_when_dropped() {
        let empty: MapVec<u64> = MapVec::new();
        assert_eq!(empty.cap, 0);
        assert!(empty.iter().next().is_none());
        drop(empty);
        let mut one = MapVec::new();
        one.push(7u64);
        assert_eq!(one.cap, FIRST_BYTES / 8);
        assert_eq!(&one[..], &[7]);
    }
}
