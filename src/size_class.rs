//! Size classes: which capacity a request is served with.
//!
//! Class `k` holds buffers of `base << k` bytes, where `base` is
//! `min_buffer_size` rounded up to a power of two of at least one page.
//! Buffers are whole pages so that they can be locked, advised and unmapped
//! on their own, and powers of two so that a buffer's capacity fits in the
//! tag bits of its address (see `buffer.rs`). A request rounds up to the
//! first class that fits, so above `base` the waste is below 2x. Classes
//! stop at the largest capacity that fits in the idle-memory budget: a
//! bigger buffer could never be kept, so it is served unpooled (allocated
//! for the request, in whole pages, and released on return).

use std::num::NonZeroUsize;

/// No buffer is larger: 256 TiB less 64 KiB (a user address space is at
/// most 2^48 bytes on x86-64 and aarch64 with 4-level tables).
pub(crate) const MAX_BUFFER_SIZE: usize = (1 << 48) - (1 << 16);

/// Upper bound on the number of classes (also the width of shard class masks).
pub(crate) const MAX_CLASSES: usize = 48;

/// Where a request of a given length is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A pooled class, with its index.
    Pooled(usize),
    /// Too big for any class: a one-off allocation of this many bytes.
    Unpooled(usize),
    /// No buffer can be this large.
    TooLarge,
}

/// The class table of one pool.
#[derive(Debug, Clone)]
pub(crate) struct SizeClasses {
    base_log2: u32,
    /// `base - 1`: a request rounds up to at least `base` (see [`Self::fast_class`]).
    below_base: NonZeroUsize,
    /// `base_log2 - 1`.
    fast_shift: u32,
    count: usize,
    page: usize,
    max_buffer: usize,
}

impl SizeClasses {
    /// Classes starting at `min_size` (rounded up to a power of two of at
    /// least `page`), as many as fit in `budget` bytes.
    pub(crate) fn new(min_size: usize, budget: usize, page: usize) -> Self {
        debug_assert!(page.is_power_of_two());
        // No address space is larger than 2^48 bytes on the 64-bit targets
        // we support (the C registry stores lengths in 48 bits); this also
        // leaves room for page rounding without overflow.
        let max_buffer = MAX_BUFFER_SIZE & !(page - 1);
        let base = min_size.max(page).checked_next_power_of_two().unwrap_or(1 << (usize::BITS - 2));
        let base_log2 = base.trailing_zeros();
        let mut count = 0;
        while count < MAX_CLASSES && base_log2 as usize + count < usize::BITS as usize - 2 {
            let cap = 1usize << (base_log2 as usize + count);
            if cap > budget || cap > max_buffer {
                break;
            }
            count += 1;
        }
        // `base` is at least a page: both are non-zero.
        let below_base = NonZeroUsize::new(base - 1).unwrap_or(NonZeroUsize::MIN);
        SizeClasses { base_log2, below_base, fast_shift: base_log2.saturating_sub(1), count, page, max_buffer }
    }

    /// Number of pooled classes (0 when the budget is below one base buffer).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Capacity of class `k`.
    #[inline]
    pub(crate) fn capacity(&self, k: usize) -> usize {
        debug_assert!(k < self.count);
        1 << (self.base_log2 as usize + k)
    }

    /// The class of a pooled buffer whose capacity is `1 << log2`; an index
    /// past `count()` for anything else.
    #[inline]
    pub(crate) fn class_of_log2(&self, log2: u32) -> usize {
        log2.wrapping_sub(self.base_log2) as usize
    }

    /// The smallest capacity any pooled buffer gets.
    pub(crate) fn base(&self) -> usize {
        1 << self.base_log2
    }

    /// The fast paths' [`lookup`](Self::lookup): the class of a request of
    /// `len` bytes if it is pooled; for anything else (0 bytes, or more than
    /// the largest class) an index `>= count()`, and the caller takes the
    /// full path. No branch: `ceil(log2(len))` is one past the top bit of
    /// `len - 1`, and or-ing in `base - 1` makes everything up to `base`
    /// class 0 (`len == 0` wraps to a class past the last).
    #[inline(always)]
    pub(crate) fn fast_class(&self, len: usize) -> usize {
        // Never zero (`below_base` is not), so `ilog2` is one instruction.
        let top = (len.wrapping_sub(1) | self.below_base.get()).ilog2();
        let class = top.wrapping_sub(self.fast_shift) as usize;
        debug_assert!(match self.lookup(len) {
            Lookup::Pooled(k) => k == class || (len == 0 && class >= self.count),
            _ => class >= self.count,
        });
        class
    }

    /// Classifies a request of `len` bytes. Never panics, whatever `len`.
    #[inline]
    pub(crate) fn lookup(&self, len: usize) -> Lookup {
        let k = if len <= self.base() {
            0
        } else if len > self.max_buffer {
            return Lookup::TooLarge;
        } else {
            let ceil_log2 = usize::BITS - (len - 1).leading_zeros();
            (ceil_log2 - self.base_log2) as usize
        };
        if k < self.count {
            Lookup::Pooled(k)
        } else {
            Lookup::Unpooled(unpooled_capacity(len, self.page))
        }
    }
}

/// Capacity of an unpooled buffer of `len` bytes: whole pages, at least one.
/// `len` must be at most the largest buffer size (checked by `lookup`).
#[inline]
pub(crate) fn unpooled_capacity(len: usize, page: usize) -> usize {
    (len.max(1) + page - 1) & !(page - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;
    const MIB: usize = 1 << 20;

    #[test]
    fn small_requests_share_the_base_class() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        for len in [0, 1, 1024, 4096, MIB] {
            assert_eq!(c.lookup(len), Lookup::Pooled(0), "len {len}");
        }
        assert_eq!(c.capacity(0), MIB);
    }

    #[test]
    fn classes_are_powers_of_two_up_to_the_budget() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        assert_eq!(c.count(), 7); // 1, 2, 4, ... 64 MiB
        assert_eq!(c.lookup(MIB + 1), Lookup::Pooled(1));
        assert_eq!(c.lookup(2 * MIB), Lookup::Pooled(1));
        assert_eq!(c.lookup(2 * MIB + 1), Lookup::Pooled(2));
        assert_eq!(c.lookup(64 * MIB), Lookup::Pooled(6));
        assert_eq!(c.lookup(64 * MIB + 1), Lookup::Unpooled(64 * MIB + PAGE));
        assert_eq!(c.class_of_log2(20), 0);
        assert_eq!(c.class_of_log2(26), 6);
        assert!(c.class_of_log2(0) >= c.count(), "unpooled tags map past the table");
    }

    #[test]
    fn every_length_fits_its_class_with_less_than_2x_waste() {
        let c = SizeClasses::new(3 * PAGE, 1 << 30, PAGE);
        let mut len = 1;
        while len < 1 << 30 {
            for probe in [len - 1, len, len + 1] {
                if let Lookup::Pooled(k) = c.lookup(probe) {
                    let cap = c.capacity(k);
                    assert!(cap >= probe, "len {probe} cap {cap}");
                    if probe > c.base() {
                        assert!(cap < 2 * probe, "len {probe} cap {cap}");
                    }
                }
            }
            len = len * 3 / 2 + 1;
        }
    }

    #[test]
    fn minimum_rounds_up_to_a_power_of_two_page_multiple() {
        let c = SizeClasses::new(1000, 1 << 20, PAGE);
        assert_eq!(c.base(), PAGE);
        assert_eq!(c.lookup(1000), Lookup::Pooled(0));
        assert_eq!(c.lookup(PAGE + 1), Lookup::Pooled(1));
        assert_eq!(SizeClasses::new(3 * PAGE, 1 << 20, PAGE).base(), 4 * PAGE);
    }

    #[test]
    fn impossible_sizes_are_too_large_not_a_panic() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        assert_eq!(c.lookup(usize::MAX), Lookup::TooLarge);
        assert_eq!(c.lookup(isize::MAX as usize), Lookup::TooLarge);
        assert_eq!(c.lookup(1 << 48), Lookup::TooLarge);
        assert!(matches!(c.lookup(1 << 40), Lookup::Unpooled(_)));
    }

    #[test]
    fn fast_class_agrees_with_lookup() {
        let tables = [
            SizeClasses::new(PAGE, 1 << 30, PAGE),
            SizeClasses::new(3 * PAGE, 64 * MIB, PAGE),
            SizeClasses::new(MIB, 0, PAGE),
        ];
        for c in tables {
            let mut lens = vec![0, 1, usize::MAX, usize::MAX - 5, 1 << 48, MAX_BUFFER_SIZE];
            for shift in 0..50 {
                lens.extend([(1usize << shift) - 1, 1 << shift, (1 << shift) + 1]);
            }
            for len in lens {
                let fast = c.fast_class(len);
                match c.lookup(len) {
                    Lookup::Pooled(k) if len > 0 => assert_eq!(fast, k, "len {len}"),
                    // 0 bytes is pooled, but the fast paths leave it to the full path.
                    _ => assert!(fast >= c.count(), "len {len}: class {fast}"),
                }
            }
        }
    }

    #[test]
    fn zero_budget_pools_nothing() {
        let c = SizeClasses::new(MIB, 0, PAGE);
        assert_eq!(c.count(), 0);
        assert_eq!(c.lookup(10), Lookup::Unpooled(PAGE));
        assert_eq!(c.lookup(3 * MIB), Lookup::Unpooled(3 * MIB));
    }

    #[test]
    fn huge_minimum_does_not_overflow() {
        let c = SizeClasses::new(1 << 40, usize::MAX, PAGE);
        assert!(c.count() >= 1);
        assert_eq!(c.lookup(usize::MAX - 5), Lookup::TooLarge);
    }
}
