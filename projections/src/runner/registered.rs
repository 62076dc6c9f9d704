//! [`Registered`]: a projection as registered in a [`Projections`](crate::Projections) set.

use std::sync::Arc;

use annals::{Position, RecordedEvent};

use crate::backend::Target;
use crate::error::{Error, Result};
use crate::policy::ProjectionOptions;
use crate::projection::Projection;
#[cfg(feature = "postgres")]
use crate::projection::SqlProjection;

/// The projection code behind a registration.
#[derive(Clone)]
pub(crate) enum Kind {
    Docs(Arc<dyn Projection>),
    #[cfg(feature = "postgres")]
    Sql(Arc<dyn SqlProjection>),
    /// No code: the caller processes the events itself and holds the lease through a
    /// [`Lease`](crate::Lease) (`Projections::leased`); runners, rebuilds and replays leave it alone.
    Leased,
}

/// One registered projection.
#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) event_types: Vec<String>,
    pub(crate) kind: Kind,
    pub(crate) options: ProjectionOptions,
}

impl Registered {
    /// What a backend needs to know of it to keep its storage.
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            name: &self.name,
            version: self.version,
            #[cfg(feature = "postgres")]
            sql: match &self.kind {
                Kind::Docs(_) | Kind::Leased => None,
                Kind::Sql(p) => Some(&**p),
            },
        }
    }

    pub(super) fn wants(&self, event: &RecordedEvent) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&event.event_type)
    }

    pub(super) async fn reset_hook(&self) -> Result<()> {
        match &self.kind {
            Kind::Docs(p) => p.reset().await.map_err(|e| Error::Hook {
                projection: self.name.clone(),
                hook: "reset",
                cause: e.to_string(),
            })?,
            #[cfg(feature = "postgres")]
            Kind::Sql(_) => {}
            Kind::Leased => {}
        }
        Ok(())
    }

    pub(super) async fn caught_up_hook(&self, position: Position) {
        match &self.kind {
            Kind::Docs(p) => p.caught_up(position).await,
            #[cfg(feature = "postgres")]
            Kind::Sql(p) => p.caught_up(position).await,
            Kind::Leased => {}
        }
    }
}
