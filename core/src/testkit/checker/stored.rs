//! What the store holds at the end of a run, read back once the clients stopped: every stream, the global order,
//! where each tagged event is, and each stream's timeline (which write made each version, when it could have
//! taken effect, the stock after it).

use std::collections::{BTreeMap, HashMap};

use crate::{EventStore, Position, RecordedEvent, StreamId};

use super::history::{NEVER, Op};
use super::stock::{StockEvent, Tag};

/// Where one tagged event is stored.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    pub(crate) stream: StreamId,
    pub(crate) version: u64,
    pub(crate) position: Position,
    pub(crate) index: u32,
}

/// The store's contents at the end of a run.
pub(crate) struct Stored {
    pub(crate) streams: BTreeMap<StreamId, Vec<RecordedEvent>>,
    pub(crate) global: Vec<RecordedEvent>,
}

impl Stored {
    /// Reads every stream of the run and the whole global order.
    pub(crate) async fn read(store: &dyn EventStore, streams: &[StreamId]) -> crate::Result<Self> {
        let global = store.read_all(Position::START, usize::MAX).await?;
        let mut read = BTreeMap::new();
        for stream in streams {
            read.insert(stream.clone(), store.load_stream(stream).await?);
        }
        Ok(Self {
            streams: read,
            global,
        })
    }

    /// Every tagged event's place, by write tag.
    pub(crate) fn locations(&self) -> HashMap<u64, Vec<Located>> {
        let mut located: HashMap<u64, Vec<Located>> = HashMap::new();
        for (stream, events) in &self.streams {
            for event in events {
                if let Some(tag) = Tag::of(event) {
                    located.entry(tag.op).or_default().push(Located {
                        stream: stream.clone(),
                        version: event.stream_version.get(),
                        position: event.position,
                        index: tag.index,
                    });
                }
            }
        }
        for places in located.values_mut() {
            places.sort_by_key(|p| p.index);
        }
        located
    }
}

/// When a write could have taken effect: not before its first attempt started, and not after its first
/// acknowledgement ([`NEVER`] when none came).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) start: u64,
    pub(crate) ack: u64,
}

/// The window of every write tag, from the operations that carried it.
pub(crate) fn windows(ops: &[Op]) -> HashMap<u64, Window> {
    let mut windows: HashMap<u64, Window> = HashMap::new();
    for op in ops {
        let Some(write) = &op.write else { continue };
        let ack = if op.outcome.acknowledged() {
            op.end
        } else {
            NEVER
        };
        let window = windows.entry(write.tag).or_insert(Window {
            start: op.start,
            ack,
        });
        window.start = window.start.min(op.start);
        window.ack = window.ack.min(ack);
    }
    windows
}

/// One stream's timeline, indexed by version (0 = before the first event).
pub(crate) struct Line {
    /// The write tag of each version's event (index 0 unused).
    pub(crate) tags: Vec<Option<Tag>>,
    /// Units in stock after each version.
    pub(crate) units: Vec<i64>,
    /// Whether a version ends an append (only those are ever visible).
    pub(crate) boundary: Vec<bool>,
    /// The latest start among the writes of versions `1..=v`.
    start_max: Vec<u64>,
    /// The earliest acknowledgement among the writes of versions `v..=n` (index `n + 1`: [`NEVER`]).
    ack_min: Vec<u64>,
}

impl Line {
    pub(crate) fn new(events: &[RecordedEvent], windows: &HashMap<u64, Window>) -> Self {
        let n = events.len();
        let mut tags = vec![None];
        let mut units = vec![0i64];
        let mut start_max = vec![0u64];
        for event in events {
            let decoded = event.decode::<StockEvent>().ok();
            let tag = decoded.as_ref().map(StockEvent::tag);
            let delta = decoded.as_ref().map_or(0, StockEvent::delta);
            let window = tag.and_then(|t| windows.get(&t.op));
            tags.push(tag);
            units.push(
                units
                    .last()
                    .copied()
                    .unwrap_or_default()
                    .saturating_add(delta),
            );
            let start = window.map_or(0, |w| w.start);
            start_max.push(start_max.last().copied().unwrap_or_default().max(start));
        }
        let mut ack_min = vec![NEVER; n + 2];
        for v in (1..=n).rev() {
            let ack = tags[v]
                .and_then(|t| windows.get(&t.op))
                .map_or(NEVER, |w| w.ack);
            ack_min[v] = ack_min[v + 1].min(ack);
        }
        let boundary = (0..=n)
            .map(|v| v == 0 || v == n || tags[v].map(|t| t.op) != tags[v + 1].map(|t| t.op))
            .collect();
        Self {
            tags,
            units,
            boundary,
            start_max,
            ack_min,
        }
    }

    /// The stream's final version.
    pub(crate) fn len(&self) -> u64 {
        self.tags.len() as u64 - 1
    }

    /// Whether the stream could have been at version `c` at some moment of `[start, end]`: every write of a
    /// version up to `c` started before `end`, no write of a later version was acknowledged before `start`, and
    /// `c` ends an append.
    pub(crate) fn possible(&self, c: u64, start: u64, end: u64) -> bool {
        let Ok(c) = usize::try_from(c) else {
            return false;
        };
        c < self.tags.len()
            && self.boundary[c]
            && self.start_max[c] < end
            && self.ack_min[c + 1] > start
    }

    /// The versions the stream could have had during `[start, end]`.
    pub(crate) fn possible_versions(&self, start: u64, end: u64) -> Vec<u64> {
        // `start_max` grows with the version and `ack_min` too: the candidates are one range.
        let high = self.start_max.partition_point(|s| *s < end);
        let low = self.ack_min[1..].partition_point(|a| *a <= start);
        (low..high)
            .filter(|c| self.boundary[*c])
            .map(|c| c as u64)
            .collect()
    }
}
