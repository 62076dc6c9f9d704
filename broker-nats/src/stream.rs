//! The JetStream stream the relay publishes into: created when missing, checked when present.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{Context, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, StorageType};

use crate::error::{Error, Result};

/// The JetStream stream of a feed: its name, the subject wildcard it captures and its duplicate window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedStream {
    /// The stream's name (`A-Z a-z 0-9 - _`).
    pub name: String,
    /// The subject it captures (`<prefix>.>`).
    pub subject: String,
    /// How long JetStream remembers message ids to drop re-publishes.
    pub duplicate_window: Duration,
}

impl FeedStream {
    /// Creates the stream when it does not exist; otherwise checks that it captures `subject` and has the same
    /// duplicate window.
    ///
    /// # Errors
    /// [`Error::StreamMismatch`] when an existing stream does not fit (the relay never edits a stream);
    /// [`Error::Unavailable`] when the server does not answer; [`Error::Refused`] when JetStream refuses.
    pub async fn ensure(&self, context: &Context) -> Result<()> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::Config {
                reason: format!(
                    "JetStream stream name {:?} must be 1 or more of A-Z, a-z, 0-9, '-' and '_'",
                    self.name
                ),
            });
        }
        match context.get_stream(&self.name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| unavailable("stream info", e))?;
                let config = &info.config;
                if !config.subjects.iter().any(|s| s == &self.subject) {
                    return Err(Error::StreamMismatch {
                        stream: self.name.clone(),
                        reason: format!(
                            "its subjects {:?} do not include {:?}",
                            config.subjects, self.subject
                        ),
                    });
                }
                if config.duplicate_window != self.duplicate_window {
                    return Err(Error::StreamMismatch {
                        stream: self.name.clone(),
                        reason: format!(
                            "its duplicate window is {:?}, the relay is configured for {:?}",
                            config.duplicate_window, self.duplicate_window
                        ),
                    });
                }
                Ok(())
            }
            Err(e)
                if matches!(e.kind(), GetStreamErrorKind::JetStream(j)
                            if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                let config = Config {
                    name: self.name.clone(),
                    subjects: vec![self.subject.clone()],
                    duplicate_window: self.duplicate_window,
                    storage: StorageType::File,
                    description: Some(
                        "Annals event feed (written by the annals-nats relay)".into(),
                    ),
                    ..Config::default()
                };
                context
                    .create_stream(config)
                    .await
                    .map_err(|e| Error::Refused {
                        operation: "create stream",
                        cause: e.to_string(),
                    })?;
                tracing::info!(stream = %self.name, subject = %self.subject, "created the JetStream stream");
                Ok(())
            }
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => Err(Error::Refused {
                operation: "get stream",
                cause: e.to_string(),
            }),
            Err(e) => Err(unavailable("get stream", e)),
        }
    }
}

fn unavailable(operation: &'static str, e: impl std::fmt::Display) -> Error {
    Error::Unavailable {
        url: String::new(),
        operation,
        cause: e.to_string(),
    }
}
