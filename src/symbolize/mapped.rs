//! A read-only memory map of a whole file: the symbolizer reads object files through it
//! instead of copying them onto the heap.
//!
//! The map is private and read-only, so its pages are shared with the page cache and
//! only the ones touched count towards the process's resident set (as file pages, not
//! anonymous memory). [`Mapped::release_pages`] gives them back to the page cache; a
//! later read faults them in again from there.
//!
//! The only `unsafe` of the symbolizer: `mmap`, `madvise` and `munmap`, and the slice over
//! the mapping.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// A private read-only mapping of one file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapped {
    /// Start of the mapping; dangling (and `len == 0`) for an empty file.
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; `&Mapped` only hands out
// shared `&[u8]` views of it, which any thread may read.
unsafe impl Send for Mapped {}
// SAFETY: as above: no interior mutability, the bytes are never written.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps `path` read-only. `None` when it cannot be opened or mapped.
    pub(crate) fn open(path: &Path) -> Option<Self> {
        let file = File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return Some(Self {
                ptr: std::ptr::NonNull::<u8>::dangling().as_ptr(),
                len: 0,
            });
        }
        // SAFETY: 1. A fresh mapping at an address of the kernel's choice (null hint): it
        //            cannot overlap memory Rust already owns.
        //         2. `file` is open for reading and `len` is its size; PROT_READ with
        //            MAP_PRIVATE never writes the file.
        //         3. The descriptor may be closed after the call; the mapping stays.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Lookups touch a few scattered pages (one unit, one symbol name): no read-ahead
        // or fault-around that would make neighbouring pages resident too.
        // SAFETY: `ptr..ptr + len` is the mapping just created; the advice changes no
        // contents.
        unsafe {
            libc::madvise(ptr, len, libc::MADV_RANDOM);
        }
        Some(Self {
            ptr: ptr.cast::<u8>().cast_const(),
            len,
        })
    }

    /// The file's bytes.
    ///
    /// Object files of a running process are replaced by package managers through a new
    /// inode (rename), which leaves this mapping intact; a file truncated in place would
    /// make reads past its new end fault, as it would for the dynamic loader itself.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: 1. `ptr` is the start of a live mapping of `len` readable bytes (or
        //            dangling with `len == 0`), owned by `self` until drop.
        //         2. The mapping is never written, so shared views are sound.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// Drops the pages of this mapping from the process's resident set; the next read
    /// faults them back in from the page cache. Harmless if it fails.
    pub(crate) fn release_pages(&self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: `ptr..ptr + len` is exactly our private read-only mapping; dropping its
        // pages changes no contents (they are re-read from the file), so the `&[u8]`
        // views stay valid.
        unsafe {
            libc::madvise(self.ptr.cast_mut().cast(), self.len, libc::MADV_DONTNEED);
        }
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: `ptr`/`len` are the mapping created in `open`, unmapped only here; no
        // view of it outlives `self` (they all borrow it).
        unsafe {
            libc::munmap(self.ptr.cast_mut().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapped_file_reads_as_its_bytes_and_survives_page_release() {
        let exe = std::env::current_exe().unwrap();
        let mapped = Mapped::open(&exe).expect("the test binary maps");
        let on_disk = std::fs::read(&exe).unwrap();
        assert_eq!(mapped.bytes().len(), on_disk.len());
        assert_eq!(&mapped.bytes()[..64], &on_disk[..64]);
        mapped.release_pages();
        assert_eq!(&mapped.bytes()[..4], b"\x7fELF");
    }

    #[test]
    fn a_missing_file_does_not_map() {
        assert!(Mapped::open(Path::new("/nonexistent/span-profiler")).is_none());
    }
}
