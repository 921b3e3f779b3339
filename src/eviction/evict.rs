//! What a policy gives up to make room (shared by the policies and the
//! set that holds them).

use crate::buffer::RawBuf;

/// What a policy gives up to make room.
#[derive(Debug)]
pub(crate) enum Evict {
    /// This idle buffer.
    Victim(RawBuf),
    /// The buffer being returned: keeping it would cost more than it gains.
    Incoming,
    /// Nothing idle here.
    Nothing,
}
