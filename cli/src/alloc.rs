//! The binary's allocator: mimalloc, except in a worker running under an
//! address-space limit.
//!
//! Preflight and merge make millions of small allocations from several
//! threads; with glibc malloc a quarter of a million-quantum preflight's CPU
//! time went to malloc/free, and the heap fragmented (perf, 1M quanta).
//! mimalloc, however, reserves address space ahead of use (a 300 MB
//! allocation needs ~450 MB of it), which a worker's `RLIMIT_AS` memory
//! limit (`quanta worker --mem-limit`, Slurm `--mem`) would count as memory
//! used. The supervisor sets [`SYSTEM_ALLOCATOR_ENV`] for that child, which
//! then allocates with the system allocator so that the limit means what it
//! says.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

/// Set (to anything) in the environment of a process that must use the
/// system allocator.
pub const SYSTEM_ALLOCATOR_ENV: &str = "QUANTA_SYSTEM_ALLOCATOR";
const SYSTEM_ALLOCATOR_ENV_C: &std::ffi::CStr = c"QUANTA_SYSTEM_ALLOCATOR";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const MIMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

pub struct QuantaAllocator;

impl QuantaAllocator {
    /// Decided at the first allocation, before any pointer exists, and never
    /// changed: every pointer is freed by the allocator that made it. Two
    /// threads racing here read the same environment and agree.
    #[inline]
    fn use_system() -> bool {
        match CHOICE.load(Ordering::Relaxed) {
            SYSTEM => true,
            MIMALLOC => false,
            _ => {
                // SAFETY: getenv with a NUL-terminated name; it does not
                // allocate, so it cannot recurse into this allocator.
                let system = unsafe { !libc::getenv(SYSTEM_ALLOCATOR_ENV_C.as_ptr()).is_null() };
                CHOICE.store(if system { SYSTEM } else { MIMALLOC }, Ordering::Relaxed);
                system
            }
        }
    }
}

// SAFETY: every method forwards to one of two sound allocators, the same one
// for the whole life of the process (see `use_system`).
unsafe impl GlobalAlloc for QuantaAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::use_system() {
            System.alloc(layout)
        } else {
            mimalloc::MiMalloc.alloc(layout)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::use_system() {
            System.alloc_zeroed(layout)
        } else {
            mimalloc::MiMalloc.alloc_zeroed(layout)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if Self::use_system() {
            System.dealloc(ptr, layout)
        } else {
            mimalloc::MiMalloc.dealloc(ptr, layout)
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::use_system() {
            System.realloc(ptr, layout, new_size)
        } else {
            mimalloc::MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

/// Turns the kernel's transparent huge pages off for this process, for
/// commands whose memory is made, freed and made again (`Command::
/// churns_memory` in main.rs): mimalloc asks for huge pages, and each fault
/// on memory it had returned then zeroes 2 MiB. Where the kernel cannot,
/// nothing changes.
pub fn without_transparent_huge_pages() {
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!("transparent huge pages stay on: {e}");
    }
}
