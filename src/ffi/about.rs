//! What the library says about itself: a status code's description and
//! its version.

use std::ffi::c_char;

use super::boundary::export;
use super::status::StatusArg;

/// Describes a status code.
///
/// @param status  a `zp_status` value (unknown values are accepted).
/// @return a static, NUL-terminated description, never NULL; do not free it.
///
/// Thread safety: thread safe.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_status_str(status: StatusArg) -> *const c_char {
    export!(c"ZP_ERR_INTERNAL: a bug inside zeropool was caught".as_ptr(), { status_str(status).as_ptr().cast() })
}

/// The description of a status code, NUL-terminated.
fn status_str(status: StatusArg) -> &'static [u8] {
    match status {
        0 => b"ZP_OK: success\0",
        1 => b"ZP_ERR_NULL_POINTER: a required pointer argument was NULL\0",
        2 => b"ZP_ERR_INVALID_ARGUMENT: a setting or size out of its range\0",
        3 => b"ZP_ERR_OUT_OF_MEMORY: the system refused memory\0",
        4 => b"ZP_ERR_TOO_LARGE: size above what any buffer can hold\0",
        5 => b"ZP_ERR_FOREIGN_BUFFER: pointer was not handed out by zeropool\0",
        6 => b"ZP_ERR_WRONG_POOL: buffer belongs to another pool\0",
        7 => b"ZP_ERR_DOUBLE_PUT: buffer already returned\0",
        8 => b"ZP_ERR_OVERFLOW: bytes past the requested size were written\0",
        9 => b"ZP_ERR_INTERNAL: a bug inside zeropool was caught\0",
        _ => b"unknown zp_status value\0",
    }
}

/// The version of the library that is loaded.
///
/// @return "MAJOR.MINOR.PATCH", static and NUL-terminated (do not free it);
///         compare with `ZP_VERSION_MAJOR`/`MINOR`/`PATCH` from the header the
///         program was built with.
///
/// Thread safety: thread safe.
/// cbindgen:prefix=ZP_NODISCARD
#[no_mangle]
pub extern "C" fn zp_version() -> *const c_char {
    const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    export!(VERSION.as_ptr().cast(), { VERSION.as_ptr().cast() })
}
