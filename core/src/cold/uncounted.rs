//! Bytes held outside the server's memory accounting: allocated from the system allocator,
//! not the module's (which is the server's). An evicted session's turns travel to disk in
//! them, so that an eviction frees at once, in the server's eyes, what it evicts; otherwise
//! the copy on its way to the I/O thread keeps used memory up and the server evicts on.
//! Bounded by the I/O queue, freed as each write finishes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::NonNull;

pub struct UncountedBytes {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a uniquely owned buffer of plain bytes.
unsafe impl Send for UncountedBytes {}

impl UncountedBytes {
    pub fn copy_of(bytes: &[u8]) -> UncountedBytes {
        if bytes.is_empty() {
            return UncountedBytes {
                ptr: NonNull::dangling(),
                len: 0,
            };
        }
        let layout = Layout::array::<u8>(bytes.len()).expect("a slice's layout");
        // SAFETY: a non-zero layout; the copy stays within both buffers.
        unsafe {
            let p = System.alloc(layout);
            let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len());
            UncountedBytes {
                ptr,
                len: bytes.len(),
            }
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialised bytes (or is dangling with len 0).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for UncountedBytes {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: allocated by `copy_of` with this layout.
            unsafe {
                System.dealloc(
                    self.ptr.as_ptr(),
                    Layout::array::<u8>(self.len).expect("a slice's layout"),
                )
            }
        }
    }
}

impl std::fmt::Debug for UncountedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UncountedBytes({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_a_copy() {
        let src = b"turns on their way to disk".to_vec();
        let u = UncountedBytes::copy_of(&src);
        drop(src);
        assert_eq!(u.as_slice(), b"turns on their way to disk");
        assert_eq!(UncountedBytes::copy_of(&[]).as_slice(), b"");
    }
}
