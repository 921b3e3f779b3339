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
    pub(crate) fn invalid(setting: &'static str, reason: String) -> Self {
        Error::InvalidConfig { setting, reason }
    }
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
