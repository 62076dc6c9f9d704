//! Writing a scenario's starting data (not measured): the same events on both sides, in batches.

use annals::{EventStore, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use sqlx::PgPool;

use crate::domain::nth_event;
use crate::raw::RawTable;

/// Events per append while filling.
const BATCH: usize = 1_000;

/// Appends `per_stream` events to each of `streams` through the Annals store.
pub(crate) async fn annals(
    store: &dyn EventStore,
    streams: &[&str],
    per_stream: usize,
) -> anyhow::Result<()> {
    let mut n = 0;
    for stream in streams {
        let id = StreamId::new(*stream)?;
        let mut version = 0;
        while version < per_stream {
            let take = BATCH.min(per_stream - version);
            let events = (n..n + take)
                .map(|i| NewEvent::from_event(&nth_event(i)))
                .collect::<Result<Vec<_>, _>>()?;
            let expected = ExpectedVersion::Exact(StreamVersion(version as u64));
            store.append(&id, expected, events).await?;
            version += take;
            n += take;
        }
    }
    Ok(())
}

/// Inserts the same events into the baseline table.
pub(crate) async fn raw(
    table: &RawTable,
    pool: &PgPool,
    streams: &[&str],
    per_stream: usize,
) -> anyhow::Result<()> {
    let mut n = 0;
    for stream in streams {
        let mut version = 0;
        while version < per_stream {
            let take = BATCH.min(per_stream - version);
            let events: Vec<_> = (n..n + take).map(nth_event).collect();
            table
                .insert_batch(pool, stream, i64::try_from(version)?, &events)
                .await?;
            version += take;
            n += take;
        }
    }
    Ok(())
}
