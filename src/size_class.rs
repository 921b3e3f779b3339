//! Size classes: which capacity a request is served with.
//!
//! Classes are spaced as jemalloc and Netty space them: one, two, three and
//! four pages, then four classes per doubling (5/4, 6/4, 7/4 and 8/4 of the
//! doubling's start), so a request of `n` bytes gets at most `1.25 * n`
//! rounded up to a page. The spacing is global (class `g` has the same
//! capacity in every pool: [`class_capacity`]), which lets a buffer carry
//! its class in the tag bits of its address (see `buffer.rs`) and give its
//! capacity without its pool. A pool uses the run of global classes that
//! starts at `min_buffer_size` (rounded up to a class): requests below it
//! get that class. Classes stop at the largest capacity that fits in the
//! idle-memory budget (or [`MAX_CLASSES`] classes): a bigger buffer could
//! never be kept, so it is served unpooled (allocated for the request, in
//! whole pages, and released on return).
//!
//! Invariants (checked in debug builds and by the tests below):
//! - `class_capacity` is strictly increasing, a whole number of pages, and
//!   `class_capacity(g + 1) <= 1.25 * class_capacity(g)` rounded up to a
//!   page, so every request above the base class wastes at most 25%.
//! - `global_class(len)` is the smallest class whose capacity holds `len`.
//! - A pool's class `k` is global class `base + k`.

use std::num::NonZeroUsize;

/// No buffer is larger: 256 TiB less 64 KiB (a user address space is at
/// most 2^48 bytes on x86-64 and aarch64 with 4-level tables).
pub(crate) const MAX_BUFFER_SIZE: usize = (1 << 48) - (1 << 16);

/// Upper bound on the number of classes of one pool (also the width of
/// shard class masks): with four per doubling, 16 doublings above the base.
pub(crate) const MAX_CLASSES: usize = 64;

/// Global classes that exist at all: a page-unit index for every capacity
/// up to [`MAX_BUFFER_SIZE`] with 4 KiB pages is below 140; a buffer's tag
/// holds `class + 1` in 8 bits.
pub(crate) const GLOBAL_CLASSES: usize = 160;

/// Pages of global class `g`: 1, 2, 3, 4, then `(5..=8) << d` for the
/// doubling `d` (`g = 4 * (d + 1) + (0..4)`).
#[inline]
pub(crate) const fn class_pages(g: usize) -> usize {
    let shift = if g < 8 { 0 } else { g / 4 - 1 };
    (g - 4 * shift + 1) << shift
}

/// The global class of a request of `pages_minus_1 + 1` pages: the
/// smallest class that holds it. Branch free: `y = pages - 1`, `lg` its top
/// bit (at least 2), then the class is `4 * (lg - 2)` plus the top three
/// bits of `y` (4..=7 above the first four classes, `y` itself below).
#[inline(always)]
pub(crate) fn class_of_pages_minus_1(y: usize) -> usize {
    let lg = (y | 4).ilog2() as usize;
    4 * (lg - 2) + (y >> (lg - 2))
}

/// Capacity in bytes of global class `g` with pages of `page` bytes.
#[inline]
pub(crate) fn class_capacity(g: usize, page: usize) -> usize {
    class_pages(g) * page
}

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
    /// The global class of the pool's class 0.
    base_class: usize,
    /// `base - 1`, where `base` is class 0's capacity: a request rounds up
    /// to at least `base` (see [`Self::fast_class`]).
    below_base: NonZeroUsize,
    page_shift: u32,
    count: usize,
    page: usize,
    max_buffer: usize,
}

impl SizeClasses {
    /// Classes starting at `min_size` (rounded up to a class, at least a
    /// page), as many as fit in `budget` bytes (and [`MAX_CLASSES`]).
    pub(crate) fn new(min_size: usize, budget: usize, page: usize) -> Self {
        debug_assert!(page.is_power_of_two());
        // No address space is larger than 2^48 bytes on the 64-bit targets
        // we support (the C registry stores lengths in 48 bits); this also
        // leaves room for page rounding without overflow.
        let max_buffer = MAX_BUFFER_SIZE & !(page - 1);
        let page_shift = page.trailing_zeros();
        let min = min_size.clamp(1, max_buffer);
        let base_class = class_of_pages_minus_1((min - 1) >> page_shift);
        let mut count = 0;
        while count < MAX_CLASSES && base_class + count < GLOBAL_CLASSES {
            let cap = class_capacity(base_class + count, page);
            if cap > budget || cap > max_buffer {
                break;
            }
            count += 1;
        }
        let base = class_capacity(base_class, page);
        // `base` is at least a page: `base - 1` is non-zero.
        let below_base = NonZeroUsize::new(base - 1).unwrap_or(NonZeroUsize::MIN);
        SizeClasses { base_class, below_base, page_shift, count, page, max_buffer }
    }

    /// Number of pooled classes (0 when the budget is below one base buffer).
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// Capacity of class `k` (0 for an index past the table). The thread
    /// caches keep these in a table of their own, for the fast paths.
    #[inline]
    pub(crate) fn capacity(&self, k: usize) -> usize {
        if k < self.count {
            class_capacity(self.base_class + k, self.page)
        } else {
            0
        }
    }

    /// The global class of the pool's class `k` (what a buffer's tag holds).
    #[inline]
    pub(crate) fn global(&self, k: usize) -> usize {
        self.base_class + k
    }

    /// The class of a buffer whose tag holds global class `tag_class - 1`
    /// (`tag_class == 0`: unpooled); an index past `count()` for anything
    /// that is not one of this pool's classes.
    #[inline(always)]
    pub(crate) fn class_of_tag(&self, tag_class: usize) -> usize {
        tag_class.wrapping_sub(self.base_class + 1)
    }

    /// The smallest capacity any pooled buffer gets.
    pub(crate) fn base(&self) -> usize {
        self.below_base.get() + 1
    }

    /// The fast paths' [`lookup`](Self::lookup): the class of a request of
    /// `len` bytes if it is pooled; for anything else (0 bytes, or more than
    /// the largest class) an index `>= count()`, and the caller takes the
    /// full path. No branch: the request is raised to the base (`max`, a
    /// conditional move; `len == 0` wraps to a class past the last), made
    /// whole pages, and classed by [`class_of_pages_minus_1`].
    #[inline(always)]
    pub(crate) fn fast_class(&self, len: usize) -> usize {
        let y = len.wrapping_sub(1).max(self.below_base.get()) >> self.page_shift;
        let class = class_of_pages_minus_1(y).wrapping_sub(self.base_class);
        debug_assert!(match self.lookup(len) {
            Lookup::Pooled(k) => k == class || (len == 0 && class >= self.count),
            _ => class >= self.count,
        });
        class
    }

    /// Classifies a request of `len` bytes. Never panics, whatever `len`.
    #[inline]
    pub(crate) fn lookup(&self, len: usize) -> Lookup {
        if len > self.max_buffer {
            return Lookup::TooLarge;
        }
        let y = len.saturating_sub(1).max(self.below_base.get()) >> self.page_shift;
        let k = class_of_pages_minus_1(y) - self.base_class;
        if k < self.count {
            debug_assert!(self.capacity(k) >= len && (k == 0 || self.capacity(k - 1) < len));
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
    fn global_classes_are_jemalloc_spaced() {
        let pages: Vec<usize> = (0..16).map(class_pages).collect();
        assert_eq!(pages, [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32]);
        for g in 0..GLOBAL_CLASSES - 1 {
            let (a, b) = (class_pages(g), class_pages(g + 1));
            assert!(b > a, "class {g}");
            // At most 25% above the previous class, or one page.
            assert!(b <= (a + a / 4).max(a + 1), "class {g}: {a} -> {b} pages");
        }
        assert!(
            class_capacity(139, PAGE) >= MAX_BUFFER_SIZE,
            "a tag's 8 bits hold every class up to the largest buffer"
        );
    }

    #[test]
    fn class_of_pages_is_the_smallest_class_that_holds_them() {
        for pages in 1..5000usize {
            let g = class_of_pages_minus_1(pages - 1);
            assert!(class_pages(g) >= pages, "{pages} pages: class {g}");
            assert!(g == 0 || class_pages(g - 1) < pages, "{pages} pages: class {g} is not the smallest");
        }
        for g in 0..GLOBAL_CLASSES {
            let p = class_pages(g);
            assert_eq!(class_of_pages_minus_1(p - 1), g, "at class {g}");
            assert_eq!(class_of_pages_minus_1(p), g + 1, "just above class {g}");
        }
    }

    #[test]
    fn small_requests_share_the_base_class() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        for len in [0, 1, 1024, 4096, MIB] {
            assert_eq!(c.lookup(len), Lookup::Pooled(0), "len {len}");
        }
        assert_eq!(c.capacity(0), MIB);
    }

    #[test]
    fn classes_are_four_per_doubling_up_to_the_budget() {
        let c = SizeClasses::new(MIB, 64 * MIB, PAGE);
        assert_eq!(c.count(), 25); // 1, 1.25, 1.5, 1.75, 2, 2.5, ... 64 MiB
        assert_eq!(c.lookup(MIB + 1), Lookup::Pooled(1));
        assert_eq!(c.capacity(1), MIB + MIB / 4);
        assert_eq!(c.lookup(2 * MIB), Lookup::Pooled(4));
        assert_eq!(c.lookup(2 * MIB + 1), Lookup::Pooled(5));
        assert_eq!(c.capacity(5), 2 * MIB + MIB / 2);
        assert_eq!(c.lookup(64 * MIB), Lookup::Pooled(24));
        assert_eq!(c.lookup(64 * MIB + 1), Lookup::Unpooled(64 * MIB + PAGE));
        assert_eq!(c.class_of_tag(c.global(0) + 1), 0);
        assert_eq!(c.class_of_tag(c.global(24) + 1), 24);
        assert!(c.class_of_tag(0) >= c.count(), "unpooled tags map past the table");
    }

    /// Every class edge from one page to 1 GiB: a length just below, at and
    /// just above each capacity gets the smallest class that holds it, at
    /// most 25% (rounded up to a page) above the request.
    #[test]
    fn every_class_edge_wastes_at_most_a_quarter() {
        let c = SizeClasses::new(PAGE, 1 << 30, PAGE);
        assert!(c.count() >= 50);
        for k in 0..c.count() {
            let cap = c.capacity(k);
            for len in [cap - 1, cap, cap + 1] {
                match c.lookup(len) {
                    Lookup::Pooled(j) => {
                        let got = c.capacity(j);
                        assert!(got >= len, "len {len} cap {got}");
                        assert!(j == 0 || c.capacity(j - 1) < len, "len {len}: a smaller class holds it");
                        let bound = (len + len / 4 + PAGE - 1) & !(PAGE - 1);
                        assert!(got <= bound.max(PAGE), "len {len}: cap {got} above 1.25x rounded to a page ({bound})");
                        assert_eq!(c.fast_class(len), j, "len {len}");
                    }
                    other => assert!(k + 1 == c.count() && len == cap + 1, "len {len}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn from_64k_to_400mb_capacity_is_at_most_125_percent() {
        let c = SizeClasses::new(64 << 10, 1 << 30, PAGE);
        let mut len = 64 << 10;
        while len <= 400_000_000 {
            for probe in [len - 1, len, len + 1] {
                let cap = match c.lookup(probe) {
                    Lookup::Pooled(k) => c.capacity(k),
                    Lookup::Unpooled(cap) => cap,
                    Lookup::TooLarge => unreachable!(),
                };
                let bound = (probe as u128 * 5 / 4) as usize;
                let bound = (bound + PAGE - 1) & !(PAGE - 1);
                assert!(cap >= probe && cap <= bound, "len {probe}: cap {cap}, bound {bound}");
            }
            len = len * 9 / 8 + 4093;
        }
    }

    #[test]
    fn minimum_rounds_up_to_a_class() {
        let c = SizeClasses::new(1000, 1 << 20, PAGE);
        assert_eq!(c.base(), PAGE);
        assert_eq!(c.lookup(1000), Lookup::Pooled(0));
        assert_eq!(c.lookup(PAGE + 1), Lookup::Pooled(1));
        assert_eq!(SizeClasses::new(3 * PAGE, 1 << 20, PAGE).base(), 3 * PAGE);
        assert_eq!(SizeClasses::new(9 * PAGE, 1 << 20, PAGE).base(), 10 * PAGE);
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
            SizeClasses::new(MIB, usize::MAX, PAGE),
            SizeClasses::new(5 * PAGE, 1 << 40, 1 << 16),
        ];
        for c in tables {
            let mut lens = vec![0, 1, usize::MAX, usize::MAX - 5, 1 << 48, MAX_BUFFER_SIZE];
            for shift in 0..50 {
                for m in [4usize, 5, 6, 7] {
                    let v = (m << shift) >> 2;
                    lens.extend([v.saturating_sub(1), v, v + 1]);
                }
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
        // The class that would hold the largest buffer is larger still: no
        // class, every request unpooled.
        let c = SizeClasses::new(MAX_BUFFER_SIZE, usize::MAX, PAGE);
        assert_eq!(c.count(), 0);
        assert_eq!(c.lookup(MAX_BUFFER_SIZE), Lookup::Unpooled(MAX_BUFFER_SIZE));
    }
}
