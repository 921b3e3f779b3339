//! Keeps a value on cache lines of its own, so that threads writing
//! neighbouring values do not invalidate each other's lines.

use std::ops::Deref;

/// `T` aligned (and so padded) to 128 bytes: two 64-byte lines, since
/// adjacent-line prefetching pairs them on x86.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
