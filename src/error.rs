//! The error type shared by the builder and the buffer calls.

use std::fmt;

/// Why a pool could not be built or a buffer could not be handed out.
///
/// Every fallible call returns this instead of panicking or aborting; the C
/// API maps each variant to one `zp_status` code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A builder setting is outside its documented range.
    InvalidConfig {
        /// The builder method that was given the bad value.
        setting: &'static str,
        /// What was wrong, with the value that was given.
        reason: String,
    },
    /// The requested size is larger than any buffer can be.
    TooLarge {
        /// The size that was asked for.
        requested: usize,
    },
    /// The operating system refused to provide the memory.
    OutOfMemory {
        /// How many bytes were asked of the system.
        bytes: usize,
    },
}

impl Error {
    /// An invalid setting, its reason formatted without ever aborting: into
    /// a buffer reserved fallibly, cut short if it does not fit, and empty
    /// when no memory can be had (the C API, which only returns the code,
    /// must not abort on a bad value: issue 26).
    pub(crate) fn invalid(setting: &'static str, reason: fmt::Arguments<'_>) -> Self {
        Error::InvalidConfig { setting, reason: bounded(reason) }
    }
}

/// `args` formatted into at most [`REASON_MAX`] bytes of a `String` whose
/// room was reserved fallibly (empty if none could be had): never an
/// infallible allocation.
fn bounded(args: fmt::Arguments<'_>) -> String {
    const REASON_MAX: usize = 160;
    struct Bounded(String);
    impl fmt::Write for Bounded {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let room = self.0.capacity() - self.0.len();
            let mut take = s.len().min(room);
            while !s.is_char_boundary(take) {
                take -= 1;
            }
            self.0.push_str(&s[..take]); // within capacity: no allocation
            Ok(())
        }
    }
    let mut out = Bounded(String::new());
    if out.0.try_reserve_exact(REASON_MAX).is_err() {
        return String::new();
    }
    let _ = fmt::write(&mut out, args);
    out.0
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig { setting, reason } => {
                write!(f, "invalid zeropool setting `{setting}`: {reason}")
            }
            Error::TooLarge { requested } => {
                write!(f, "requested {requested} bytes, more than any buffer can hold")
            }
            Error::OutOfMemory { bytes } => {
                write!(f, "the system refused {bytes} bytes of memory")
            }
        }
    }
}

impl std::error::Error for Error {}
