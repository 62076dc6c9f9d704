//! [`Mode`]: what a [`FaultProxy`](crate::FaultProxy) does with the bytes and connections it sees.

use std::time::Duration;

/// What the proxy does, from the moment it is set until the next change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Forwards every byte at once, both ways (the default, and what `restore` goes back to).
    #[default]
    Pass,
    /// Forwards every chunk read from either side after waiting this long (latency added per chunk, so a
    /// conversation of many round trips slows down accordingly).
    Delay(Duration),
    /// Accepts and keeps connections (open ones and new ones) but forwards nothing: the bytes read are held,
    /// and the peers wait until their own timeouts fire, as behind a network partition. Leaving this mode
    /// forwards what was held, as TCP would after the partition heals.
    BlackHole,
    /// Closes every new connection as soon as it is accepted (the client's connect succeeds, then it reads
    /// end-of-file or a reset); open connections keep passing. Combine with
    /// [`sever`](crate::FaultProxy::sever) for a server that is down.
    Refuse,
}
