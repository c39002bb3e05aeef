//! The real thing: this test process's own tables, and walks of this thread's stack.

use super::*;
use crate::sampler::linux::bounds::StackBounds;
use crate::sampler::linux::regs::current_registers;

/// This thread's stack range (normal context: `pthread_getattr_np` may allocate).
fn own_bounds() -> StackBounds {
    // SAFETY: zero is a valid placeholder; `pthread_getattr_np` initialises it.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: this live thread; valid out-pointer.
    let rc = unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) };
    assert_eq!(rc, 0);
    let (mut addr, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: `attr` initialised above; valid out-pointers.
    let rc = unsafe { libc::pthread_attr_getstack(&attr, &mut addr, &mut size) };
    assert_eq!(rc, 0);
    // SAFETY: initialised above, destroyed once.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    StackBounds {
        lo: addr as usize,
        hi: addr as usize + size,
    }
}

/// Builds and publishes this process's tables (once per test process: tests share
/// the published pointer).
fn published() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut m = Maintainer::default();
        set_mode(Unwinder::Auto);
        m.maintain();
        assert!(m.counts().objects >= 2, "{:?}", m.counts());
        // Kept for the whole test process.
        std::mem::forget(m);
    });
}

#[inline(never)]
fn walk_here(mode: walk::Mode, out: &mut [usize]) -> Walk {
    let regs = current_registers();
    publish::with_tables(|tables| {
        // SAFETY: our own stack, mapped while this function runs.
        unsafe { walk::unwind(tables, mode, &regs, own_bounds(), out) }
    })
}

#[inline(never)]
fn middle(mode: walk::Mode, out: &mut [usize]) -> Walk {
    let walk = walk_here(mode, out);
    std::hint::black_box(walk)
}

#[inline(never)]
fn outer(mode: walk::Mode, out: &mut [usize]) -> Walk {
    let walk = middle(mode, out);
    std::hint::black_box(walk)
}

/// Whether `ra` is a return address inside `f` (small functions: within 1 KiB).
fn inside(ra: usize, f: usize) -> bool {
    ra > f && ra < f + 1024
}

#[test]
fn walking_from_here_passes_every_caller_and_reaches_the_thread_start() {
    published();
    for mode in [walk::Mode::Cfi, walk::Mode::Auto] {
        let mut out = [0usize; 128];
        let walk = outer(mode, &mut out);
        let frames = &out[..walk.len];
        assert!(
            walk.complete,
            "{mode:?}: the walk reaches the thread's start: {walk:?}"
        );
        assert!(!walk.truncated);
        assert!(walk.cfi_frames as usize >= walk.len - 1, "{walk:?}");
        // frames[0] is inside walk_here, then its callers in order.
        type F = fn(walk::Mode, &mut [usize]) -> Walk;
        let callers = [
            walk_here as F as usize,
            middle as F as usize,
            outer as F as usize,
        ];
        assert!(inside(frames[0], callers[0]), "{frames:x?}");
        assert!(inside(frames[1], callers[1]), "{frames:x?}");
        assert!(inside(frames[2], callers[2]), "{frames:x?}");
    }
}

#[test]
fn tables_cover_the_main_program_libc_and_the_vdso() {
    published();
    with_tables_names(|names| {
        assert!(names.iter().any(|n| n == "[main program]"), "{names:?}");
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("vdso")), "{names:?}");
    });
}

fn with_tables_names(f: impl FnOnce(&[String])) {
    let names: Vec<String> = publish::with_tables(|t| {
        t.map(|t| t.modules.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default()
    });
    f(&names);
}

#[test]
fn an_unchanged_set_of_objects_is_not_rebuilt_and_a_new_publication_reuses_tables() {
    let mut m = Maintainer::default();
    set_mode(Unwinder::Auto);
    m.maintain();
    let first = m.counts();
    eprintln!(
        "tables of this test process: {} objects, {} KiB, {} inexpressible rows, built in {} ms",
        first.objects,
        first.table_bytes / 1024,
        first.rows_inexpressible,
        first.build_ns / 1_000_000
    );
    m.maintain();
    assert_eq!(m.counts().rebuilds, first.rebuilds, "nothing changed");
    // Forcing a refresh reuses every object's table.
    m.generation = None;
    m.maintain();
    let second = m.counts();
    assert_eq!(second.rebuilds, first.rebuilds + 1);
    assert_eq!(second.objects_built, first.objects_built, "all reused");
    std::mem::forget(m);
}
