//! Size classes: which capacity a request is served with.
//!
//! Class `k` holds buffers of `base << k` bytes, where `base` is
//! `min_buffer_size` rounded up to whole pages (buffers are page-granular so
//! they can be locked, advised and unmapped on their own). A request rounds
//! up to the first class that fits, so above `base` the waste is below 2x.
//! Classes stop at the largest capacity that fits in the idle-memory budget:
//! a bigger buffer could never be kept, so it is served unpooled (allocated
//! for the request, released on return).

/// Class tag of a buffer that is not pooled.
pub(crate) const UNPOOLED: u8 = u8::MAX;

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
    base: usize,
    base_log2: u32,
    count: usize,
    page: usize,
    max_buffer: usize,
}

impl SizeClasses {
    /// Classes starting at `min_size` (rounded up to `page`), as many as fit
    /// in `budget` bytes.
    pub(crate) fn new(min_size: usize, budget: usize, page: usize) -> Self {
        debug_assert!(page.is_power_of_two());
        // Leaves room for page rounding and a trailing page without overflow.
        let max_buffer = (isize::MAX as usize) & !(page - 1);
        let max_buffer = max_buffer - 2 * page;
        let base = round_up(min_size.max(1), page).unwrap_or(max_buffer);
        let mut count = 0;
        while count < MAX_CLASSES {
            match base.checked_shl(count as u32) {
                Some(cap) if cap >> count == base && cap <= budget && cap <= max_buffer => {
                    count += 1
                }
                _ => break,
            }
        }
        SizeClasses { base, base_log2: base.ilog2(), count, page, max_buffer }
    }

    /// Number of pooled classes (0 when the budget is below one base buffer).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Capacity of class `k`.
    pub(crate) fn capacity(&self, k: usize) -> usize {
        debug_assert!(k < self.count);
        self.base << k
    }

    /// The smallest capacity any buffer gets.
    pub(crate) fn base(&self) -> usize {
        self.base
    }

    /// Classifies a request of `len` bytes. Never panics, whatever `len`.
    #[inline]
    pub(crate) fn lookup(&self, len: usize) -> Lookup {
        if len <= self.base {
            return if self.count > 0 { Lookup::Pooled(0) } else { Lookup::Unpooled(self.base) };
        }
        if len > self.max_buffer {
            return Lookup::TooLarge;
        }
        // ceil(log2(len)) - floor(log2(base)) is the class, or one past it
        // when base is not a power of two.
        let ceil_log2 = usize::BITS - (len - 1).leading_zeros();
        let mut k = (ceil_log2 - self.base_log2) as usize;
        if k > 0 && k - 1 < self.count && (self.base << (k - 1)) >= len {
            k -= 1;
        }
        if k < self.count {
            Lookup::Pooled(k)
        } else {
            // Cannot overflow: len <= max_buffer, which is page aligned.
            Lookup::Unpooled(round_up(len, self.page).unwrap_or(self.max_buffer))
        }
    }
}

/// `n` rounded up to a multiple of `align` (a power of two), or None on overflow.
pub(crate) fn round_up(n: usize, align: usize) -> Option<usize> {
    Some(n.checked_add(align - 1)? & !(align - 1))
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
    fn unaligned_minimum_rounds_to_pages() {
        let c = SizeClasses::new(1000, 1 << 20, PAGE);
        assert_eq!(c.base(), PAGE);
        assert_eq!(c.lookup(1000), Lookup::Pooled(0));
        assert_eq!(c.lookup(PAGE + 1), Lookup::Pooled(1));
    }

    #[test]
    fn impossible_sizes_are_too_large_not_a_panic() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        assert_eq!(c.lookup(usize::MAX), Lookup::TooLarge);
        assert_eq!(c.lookup(isize::MAX as usize), Lookup::TooLarge);
        assert!(matches!(c.lookup(1 << 40), Lookup::Unpooled(_)));
    }

    #[test]
    fn zero_budget_pools_nothing() {
        let c = SizeClasses::new(MIB, 0, PAGE);
        assert_eq!(c.count(), 0);
        assert_eq!(c.lookup(10), Lookup::Unpooled(MIB));
        assert_eq!(c.lookup(3 * MIB), Lookup::Unpooled(3 * MIB));
    }

    #[test]
    fn huge_minimum_does_not_overflow() {
        let c = SizeClasses::new(1 << 40, usize::MAX, PAGE);
        assert!(c.count() >= 1);
        assert_eq!(c.lookup(usize::MAX - 5), Lookup::TooLarge);
    }
}
