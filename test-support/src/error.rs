//! The error type of the test-support crate.

/// `Result` with [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while setting up a fixture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The proxy could not listen on a free port of 127.0.0.1. Check the machine's network (or its file
    /// descriptor limit) and run the test again.
    #[error("the fault proxy cannot listen on 127.0.0.1: {source}")]
    Listen {
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
