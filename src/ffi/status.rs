//! Status codes and the C enums (taken as integers, converted from one
//! table each).

use crate::error::Error;

/// What a `zp_*` call did. Every function that can fail returns one.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zp_status {
    /// Success.
    ZP_OK = 0,
    /// A required pointer argument was NULL.
    ZP_ERR_NULL_POINTER = 1,
    /// A setting or size out of its range (including an unknown enum value).
    ZP_ERR_INVALID_ARGUMENT = 2,
    /// The system refused memory.
    ZP_ERR_OUT_OF_MEMORY = 3,
    /// Size above what any buffer can hold.
    ZP_ERR_TOO_LARGE = 4,
    /// The pointer was not handed out by zeropool (or is an interior pointer).
    ZP_ERR_FOREIGN_BUFFER = 5,
    /// The buffer belongs to another pool.
    ZP_ERR_WRONG_POOL = 6,
    /// The buffer was already returned.
    ZP_ERR_DOUBLE_PUT = 7,
    /// Bytes past the requested size were written.
    ZP_ERR_OVERFLOW = 8,
    /// A bug inside zeropool was caught (e.g. a panic).
    ZP_ERR_INTERNAL = 9,
}

use zp_status::*;

impl From<&Error> for zp_status {
    fn from(e: &Error) -> zp_status {
        match e {
            Error::InvalidConfig { .. } => ZP_ERR_INVALID_ARGUMENT,
            Error::TooLarge { .. } => ZP_ERR_TOO_LARGE,
            Error::OutOfMemory { .. } => ZP_ERR_OUT_OF_MEMORY,
        }
    }
}

/// Values for `zp_config_set_eviction_policy` (passed as `uint32_t`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zp_eviction_policy {
    /// CLOCK-Pro adapted to buffers (the default).
    ZP_EVICTION_CLOCK_PRO = 0,
    /// Most recently returned first; least recently returned evicted first.
    ZP_EVICTION_LIFO = 1,
}

/// Values for `zp_config_set_zeroing` (passed as `uint32_t`).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum zp_zeroing {
    /// Zero on get and scrub on put (the default).
    ZP_ZERO_ALWAYS = 0,
    /// Scrub on put only; gets still see zeros.
    ZP_ZERO_ON_PUT = 1,
    /// No zeroing while pooled: a get may see old bytes. Not for secrets.
    ZP_ZERO_NEVER = 2,
}

/// How C passes a `zp_status`, `zp_eviction_policy` or `zp_zeroing` in:
/// as its `uint32_t` value, validated here, because an out-of-range value
/// in a Rust enum would be undefined behaviour. The header shows the enum
/// names (see `[export.rename]` in cbindgen.toml).
pub type StatusArg = u32;
/// See [`StatusArg`].
pub type PolicyArg = u32;
/// See [`StatusArg`].
pub type ZeroingArg = u32;

/// A C enum taken as an integer, validated against one table that names
/// each C value and the Rust value it stands for (rustls-ffi's pattern):
/// `None` for a value the table lacks.
macro_rules! from_c {
    ($(#[$doc:meta])* $name:ident: $arg:ty => $rust:ty { $($c:path => $r:expr),+ $(,)? }) => {
        $(#[$doc])*
        pub(crate) fn $name(value: $arg) -> Option<$rust> {
            $(if value == $c as $arg {
                return Some($r);
            })+
            None
        }
    };
}

from_c! {
    /// `zp_zeroing` as the Rust [`Zeroing`](crate::Zeroing).
    zeroing_from_c: ZeroingArg => crate::Zeroing {
        zp_zeroing::ZP_ZERO_ALWAYS => crate::Zeroing::Always,
        zp_zeroing::ZP_ZERO_ON_PUT => crate::Zeroing::OnPut,
        zp_zeroing::ZP_ZERO_NEVER => crate::Zeroing::Never,
    }
}

from_c! {
    /// `zp_eviction_policy` as the Rust [`EvictionPolicy`](crate::EvictionPolicy).
    policy_from_c: PolicyArg => crate::EvictionPolicy {
        zp_eviction_policy::ZP_EVICTION_CLOCK_PRO => crate::EvictionPolicy::ClockPro,
        zp_eviction_policy::ZP_EVICTION_LIFO => crate::EvictionPolicy::Lifo,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_enums_convert_from_their_table_only() {
        assert_eq!(zeroing_from_c(0), Some(crate::Zeroing::Always));
        assert_eq!(zeroing_from_c(zp_zeroing::ZP_ZERO_ON_PUT as u32), Some(crate::Zeroing::OnPut));
        assert_eq!(zeroing_from_c(2), Some(crate::Zeroing::Never));
        assert_eq!(policy_from_c(0), Some(crate::EvictionPolicy::ClockPro));
        assert_eq!(policy_from_c(1), Some(crate::EvictionPolicy::Lifo));
        for bad in [3, 4, 255, u32::MAX] {
            assert_eq!(zeroing_from_c(bad), None);
            assert_eq!(policy_from_c(bad.max(2)), None);
        }
    }
}
