//! Interposition of the C allocator for the tests that prove code never allocates:
//! `interpose_c_allocator!(note)` defines `malloc`, `calloc`, `realloc`, `free`,
//! `posix_memalign`, `aligned_alloc` and `memalign` in the test binary (they win over
//! glibc's at link time), each calling `note()` and then forwarding to glibc's `__libc_*`
//! entry points. `note` must itself never allocate.

/// See the module docs.
#[macro_export]
macro_rules! interpose_c_allocator {
    ($note:path) => {
        extern "C" {
            fn __libc_malloc(size: usize) -> *mut std::ffi::c_void;
            fn __libc_calloc(n: usize, size: usize) -> *mut std::ffi::c_void;
            fn __libc_realloc(ptr: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void;
            fn __libc_free(ptr: *mut std::ffi::c_void);
            fn __libc_memalign(align: usize, size: usize) -> *mut std::ffi::c_void;
        }

        /// # Safety
        /// The C `malloc` contract.
        #[no_mangle]
        pub unsafe extern "C" fn malloc(size: usize) -> *mut std::ffi::c_void {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_malloc(size) }
        }

        /// # Safety
        /// The C `calloc` contract.
        #[no_mangle]
        pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut std::ffi::c_void {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_calloc(n, size) }
        }

        /// # Safety
        /// The C `realloc` contract.
        #[no_mangle]
        pub unsafe extern "C" fn realloc(
            ptr: *mut std::ffi::c_void,
            size: usize,
        ) -> *mut std::ffi::c_void {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_realloc(ptr, size) }
        }

        /// # Safety
        /// The C `free` contract.
        #[no_mangle]
        pub unsafe extern "C" fn free(ptr: *mut std::ffi::c_void) {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_free(ptr) }
        }

        /// # Safety
        /// The C `posix_memalign` contract.
        #[no_mangle]
        pub unsafe extern "C" fn posix_memalign(
            out: *mut *mut std::ffi::c_void,
            align: usize,
            size: usize,
        ) -> i32 {
            $note();
            // SAFETY: forwards the caller's contract.
            let ptr = unsafe { __libc_memalign(align, size) };
            if ptr.is_null() {
                return libc::ENOMEM;
            }
            // SAFETY: `out` is the caller's valid out-pointer.
            unsafe { *out = ptr };
            0
        }

        /// # Safety
        /// The C `aligned_alloc` contract.
        #[no_mangle]
        pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut std::ffi::c_void {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_memalign(align, size) }
        }

        /// # Safety
        /// The C `memalign` contract.
        #[no_mangle]
        pub unsafe extern "C" fn memalign(align: usize, size: usize) -> *mut std::ffi::c_void {
            $note();
            // SAFETY: forwards the caller's contract.
            unsafe { __libc_memalign(align, size) }
        }
    };
}
