//! Packed words: every atomic word that holds several values (a slot's
//! state, length and tag; a thread cache's idle count and bytes; a
//! region's use count and CLOSED bit; a pool's trim generation and CLOSED
//! bit) names its parts as [`Field`]s, so that the shifts and masks are
//! written once and checked: a value that does not fit its field is a bug
//! caught in debug builds, and the tests below round-trip every field.

/// `bits` bits of a `u64`, starting at bit `shift`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Field {
    shift: u32,
    bits: u32,
}

impl Field {
    /// A field; the compiler rejects one that does not fit in 64 bits when
    /// it is a `const`.
    pub(crate) const fn new(shift: u32, bits: u32) -> Field {
        assert!(bits > 0 && shift + bits <= 64, "a field must fit in the word");
        Field { shift, bits }
    }

    /// The field right above this one, `bits` wide.
    pub(crate) const fn above(self, bits: u32) -> Field {
        Field::new(self.shift + self.bits, bits)
    }

    /// The largest value the field holds.
    #[inline(always)]
    pub(crate) const fn max(self) -> u64 {
        if self.bits == 64 {
            u64::MAX
        } else {
            (1 << self.bits) - 1
        }
    }

    /// The field's bits, in place.
    #[inline(always)]
    pub(crate) const fn mask(self) -> u64 {
        self.max() << self.shift
    }

    /// One unit of the field, in place (what adding 1 to it adds).
    #[inline(always)]
    pub(crate) const fn one(self) -> u64 {
        1 << self.shift
    }

    /// `value` in place (it must fit: checked in debug builds).
    #[inline(always)]
    pub(crate) const fn pack(self, value: u64) -> u64 {
        debug_assert!(value <= self.max(), "value does not fit its field");
        value << self.shift
    }

    /// The field's value in `word`.
    #[inline(always)]
    pub(crate) const fn get(self, word: u64) -> u64 {
        (word >> self.shift) & self.max()
    }

    /// `word` with the field set to `value` (the rest unchanged).
    #[inline(always)]
    pub(crate) const fn set(self, word: u64, value: u64) -> u64 {
        (word & !self.mask()) | self.pack(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_leave_their_neighbours_alone() {
        let low = Field::new(0, 48);
        let mid = low.above(12);
        let top = mid.above(4);
        assert_eq!(top, Field::new(60, 4));
        for (a, b, c) in [(0, 0, 0), (1, 1, 1), (low.max(), mid.max(), top.max()), (12345, 0xabc, 9)] {
            let w = low.pack(a) | mid.pack(b) | top.pack(c);
            assert_eq!((low.get(w), mid.get(w), top.get(w)), (a, b, c));
            let w2 = mid.set(w, 7);
            assert_eq!((low.get(w2), mid.get(w2), top.get(w2)), (a, 7, c));
        }
        assert_eq!(low.mask() | mid.mask() | top.mask(), u64::MAX);
        assert_eq!(low.mask() & mid.mask(), 0);
        assert_eq!(mid.one(), 1 << 48);
        assert_eq!(Field::new(0, 64).max(), u64::MAX);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "does not fit")]
    fn a_value_too_wide_is_caught() {
        let _ = Field::new(4, 3).pack(8);
    }
}
