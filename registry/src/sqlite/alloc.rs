//! SQLite's memory comes from Rust's global allocator (whatever the binary
//! chose: mimalloc for `quanta`), with SQLite's memory statistics off.
//!
//! Why: in a million-dataset merge, SQLite's own malloc calls (glibc, each
//! behind SQLite's global memory-statistics mutex) were ~15% of the registry
//! writer thread's time (perf). Configured once per process, before the
//! first connection; if SQLite was already initialized by other code in the
//! process, `sqlite3_config` refuses and SQLite keeps its default allocator,
//! which is only slower.

use std::alloc::{alloc, dealloc, realloc, Layout};
use std::os::raw::{c_int, c_void};
use std::sync::Once;

use rusqlite::ffi;

/// Bytes before each block: the requested size, padded to keep SQLite's
/// required 8-byte (here 16-byte) alignment.
const HEADER: usize = 16;
const ALIGN: usize = 16;

fn layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(HEADER)?, ALIGN).ok()
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    let Some(layout) = usize::try_from(n).ok().filter(|&n| n > 0).and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size.
    let base = unsafe { alloc(layout) };
    if base.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: `base` is valid for HEADER bytes and 16-byte aligned.
    unsafe {
        (base as *mut usize).write(layout.size() - HEADER);
        base.add(HEADER) as *mut c_void
    }
}

/// The block's base and the size it was allocated with.
///
/// # Safety
/// `p` came from `x_malloc` or `x_realloc` and was not freed.
unsafe fn block(p: *mut c_void) -> (*mut u8, usize) {
    let base = unsafe { (p as *mut u8).sub(HEADER) };
    (base, unsafe { (base as *const usize).read() })
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: SQLite frees only what its xMalloc/xRealloc returned.
    unsafe {
        let (base, size) = block(p);
        dealloc(
            base,
            Layout::from_size_align_unchecked(size + HEADER, ALIGN),
        );
    }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    if p.is_null() {
        return unsafe { x_malloc(n) };
    }
    let Some(new) = usize::try_from(n).ok().filter(|&n| n > 0).and_then(layout) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `p` is a live block of ours; the new size is non-zero.
    unsafe {
        let (base, size) = block(p);
        let moved = realloc(
            base,
            Layout::from_size_align_unchecked(size + HEADER, ALIGN),
            new.size(),
        );
        if moved.is_null() {
            return std::ptr::null_mut();
        }
        (moved as *mut usize).write(new.size() - HEADER);
        moved.add(HEADER) as *mut c_void
    }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: as in x_free; sizes came from a c_int.
    unsafe { block(p).1 as c_int }
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    n.saturating_add(7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

/// Call before opening any connection.
pub(crate) fn configure() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: both options are valid before sqlite3_initialize; SQLite
        // copies the methods struct. A refusal (SQLITE_MISUSE: already
        // initialized) leaves SQLite's defaults in place.
        unsafe {
            ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int);
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            );
        }
    });
}
