//! The module's global allocator: the server's (memory shows in INFO and MEMORY USAGE), with
//! the server's realloc. The crate's allocator has no realloc, so every growing Vec (a
//! session's arena on each add past its reservation) paid a new block, a copy and a free;
//! the server's realloc grows in place when the allocator can.

use std::alloc::{GlobalAlloc, Layout};

use redis_module::alloc::RedisAlloc;
use redis_module::raw;

/// The alignment malloc gives every block of at least that many bytes on x86-64 and aarch64
/// (glibc and jemalloc alike); smaller blocks may only be 8-aligned.
const MALLOC_ALIGN: usize = 16;

#[derive(Default, Debug, Copy, Clone)]
pub struct ServerAlloc;

unsafe impl GlobalAlloc for ServerAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        RedisAlloc.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        RedisAlloc.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Realloc keeps malloc's alignment only; a stricter one takes the copying path (as
        // the standard library's System allocator does).
        match raw::RedisModule_Realloc {
            Some(realloc) if layout.align() <= MALLOC_ALIGN && layout.align() <= new_size => {
                realloc(ptr.cast(), new_size).cast()
            }
            _ => {
                let new = Layout::from_size_align_unchecked(new_size, layout.align());
                let to = self.alloc(new);
                if !to.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, to, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                to
            }
        }
    }
}
