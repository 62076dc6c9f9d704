//! The sequential model of an event store and the checks of a history against it: every acknowledged append
//! stored once, in one piece, where its answer says; nothing definitely failed stored; unknown outcomes stored
//! wholly or not at all; streams without holes; a global order consistent with every stream; and every answer
//! (conflicts, reads, refusals, replays) explained by an order of the operations consistent with real time.

use std::collections::{BTreeMap, HashMap};

use crate::{ExpectedVersion, StreamId};

use super::history::{Kind, Op, Outcome};
use super::report::Violation;
use super::stock::{Action, Tag};
use super::stored::{Line, Located, Stored, Window, windows};

/// What the checks share: the history, what is stored, and the derived indexes.
struct Model<'a> {
    ops: &'a [Op],
    stored: &'a Stored,
    located: HashMap<u64, Vec<Located>>,
    windows: HashMap<u64, Window>,
    lines: BTreeMap<StreamId, Line>,
    violations: Vec<Violation>,
}

/// Checks `ops` against what the store holds; returns every rule broken.
pub(crate) fn check(ops: &[Op], stored: &Stored) -> Vec<Violation> {
    let windows = windows(ops);
    let lines = stored
        .streams
        .iter()
        .map(|(stream, events)| (stream.clone(), Line::new(events, &windows)))
        .collect();
    let mut model = Model {
        ops,
        stored,
        located: stored.locations(),
        windows,
        lines,
        violations: Vec::new(),
    };
    model.streams_have_no_holes();
    model.global_order_matches_the_streams();
    model.every_event_belongs_to_one_write();
    model.writes_are_stored_as_answered();
    model.transactions_are_all_or_nothing();
    model.stream_order_respects_real_time();
    model.answers_are_explained();
    model.command_ids_replay_their_outcome();
    model.shipments_were_allowed();
    model.violations
}

impl Model<'_> {
    fn violate(&mut self, rule: &'static str, detail: String, ops: Vec<u64>) {
        self.violations.push(Violation::new(rule, detail, ops));
    }

    /// The operations that carried the write `tag`.
    fn attempts(&self, tag: u64) -> Vec<u64> {
        self.ops
            .iter()
            .filter(|op| op.write.as_ref().is_some_and(|w| w.tag == tag))
            .map(|op| op.id)
            .collect()
    }

    fn streams_have_no_holes(&mut self) {
        let mut found = Vec::new();
        for (stream, events) in &self.stored.streams {
            for (i, event) in events.iter().enumerate() {
                let wanted = i as u64 + 1;
                if event.stream_version.get() != wanted || event.stream_id != *stream {
                    found.push(format!(
                        "stream {stream} holds {}@{} where version {wanted} belongs",
                        event.stream_id, event.stream_version
                    ));
                    break;
                }
                if i > 0 && event.position <= events[i - 1].position {
                    found.push(format!(
                        "stream {stream}: version {wanted} has position {}, not above the previous {}",
                        event.position,
                        events[i - 1].position
                    ));
                }
            }
        }
        for detail in found {
            self.violate("per-stream versions are 1..n with no hole", detail, vec![]);
        }
    }

    fn global_order_matches_the_streams(&mut self) {
        let mut found = Vec::new();
        let mut last = crate::Position::START;
        for event in &self.stored.global {
            if event.position <= last {
                found.push(format!("position {} follows {last}", event.position));
            }
            last = event.position;
            let index =
                usize::try_from(event.stream_version.get().saturating_sub(1)).unwrap_or(usize::MAX);
            let twin = self
                .stored
                .streams
                .get(&event.stream_id)
                .and_then(|events| events.get(index));
            if twin.is_none_or(|t| t.event_id != event.event_id || t.position != event.position) {
                found.push(format!(
                    "the global order has {}@{} at position {}, which its stream does not hold there",
                    event.stream_id, event.stream_version, event.position
                ));
            }
        }
        let in_streams: usize = self.stored.streams.values().map(Vec::len).sum();
        if in_streams != self.stored.global.len() {
            found.push(format!(
                "the streams hold {in_streams} events, the global order {}",
                self.stored.global.len()
            ));
        }
        for detail in found {
            self.violate(
                "the global order is consistent with each stream's order",
                detail,
                vec![],
            );
        }
    }

    fn every_event_belongs_to_one_write(&mut self) {
        let mut found = Vec::new();
        for (stream, events) in &self.stored.streams {
            for event in events {
                match Tag::of(event) {
                    None => found.push((
                        format!(
                            "{stream}@{} ({}) carries no tag",
                            event.stream_version, event.event_type
                        ),
                        vec![],
                    )),
                    Some(tag) if !self.windows.contains_key(&tag.op) => found.push((
                        format!(
                            "{stream}@{} carries tag {} that no operation wrote",
                            event.stream_version, tag.op
                        ),
                        vec![],
                    )),
                    Some(_) => {}
                }
            }
        }
        for (tag, places) in &self.located {
            let mut indexes: Vec<u32> = places.iter().map(|p| p.index).collect();
            indexes.dedup();
            if indexes.len() != places.len() {
                found.push((
                    format!(
                        "an event of write {tag} is stored twice: {}",
                        describe(places)
                    ),
                    self.attempts(*tag),
                ));
            }
        }
        for (detail, ops) in found {
            self.violate(
                "every stored event maps to one operation's event, once",
                detail,
                ops,
            );
        }
    }

    fn writes_are_stored_as_answered(&mut self) {
        let mut by_tag: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for op in self.ops {
            if let Some(write) = &op.write {
                by_tag.entry(write.tag).or_default().push(op);
            }
        }
        let mut found = Vec::new();
        for (tag, attempts) in &by_tag {
            let places = self.located.get(tag).map(Vec::as_slice).unwrap_or_default();
            let ids: Vec<u64> = attempts.iter().map(|op| op.id).collect();
            let events = attempts[0].write.as_ref().map_or(0, |w| w.events);
            if let Some(problem) = one_piece(attempts[0], events, places) {
                found.push((
                    "an append is stored in one piece, in its stream",
                    problem,
                    ids.clone(),
                ));
            }
            for op in attempts {
                // Another attempt of the same write (a resend, a repeated command id) may have stored it, unless
                // it was acknowledged before this one started: then this one had to find it.
                let excused = op.outcome.definitely_failed()
                    && attempts.iter().any(|other| {
                        other.id != op.id
                            && !other.outcome.definitely_failed()
                            && other.end > op.start
                    });
                if excused {
                    continue;
                }
                if let Some((rule, problem)) = as_answered(op, places) {
                    let mut ops = vec![op.id];
                    ops.extend(ids.iter().filter(|id| **id != op.id));
                    found.push((rule, problem, ops));
                }
            }
        }
        for (rule, detail, ops) in found {
            self.violate(rule, detail, ops);
        }
    }

    fn transactions_are_all_or_nothing(&mut self) {
        let mut groups: BTreeMap<u64, Vec<&Op>> = BTreeMap::new();
        for op in self.ops {
            if let Kind::Path { group, .. } = op.kind {
                groups.entry(group).or_default().push(op);
            }
        }
        let mut found = Vec::new();
        for ops in groups.values() {
            let in_doubt: Vec<&&Op> = ops
                .iter()
                .filter(|op| matches!(op.outcome, Outcome::InDoubt { .. }))
                .collect();
            let stored: Vec<bool> = in_doubt
                .iter()
                .map(|op| {
                    op.write
                        .as_ref()
                        .is_some_and(|w| self.located.contains_key(&w.tag))
                })
                .collect();
            if stored.iter().any(|s| *s) && stored.iter().any(|s| !*s) {
                found.push(ops.iter().map(|op| op.id).collect::<Vec<_>>());
            }
        }
        for ops in found {
            self.violate(
                "a transaction commits all of its appends or none",
                "a transaction whose commit had no answer is stored in part".to_owned(),
                ops,
            );
        }
    }

    fn stream_order_respects_real_time(&mut self) {
        let mut found = Vec::new();
        for (stream, line) in &self.lines {
            // The write with the latest start so far: a later version's write acknowledged before it started
            // was stored after an operation that began only once it had finished.
            let mut latest: Option<(u64, Window)> = None;
            let mut previous = None;
            for tag in line.tags.iter().skip(1).flatten() {
                if previous == Some(tag.op) {
                    continue;
                }
                previous = Some(tag.op);
                let Some(window) = self.windows.get(&tag.op).copied() else {
                    continue;
                };
                if let Some((earlier, w)) = latest
                    && window.ack < w.start
                {
                    found.push((
                        format!(
                            "in {stream}, write {} (acknowledged at {}) is stored after write {earlier}, which \
                             started only at {}",
                            tag.op, window.ack, w.start
                        ),
                        [self.attempts(tag.op), self.attempts(earlier)].concat(),
                    ));
                }
                if latest.is_none_or(|(_, w)| window.start > w.start) {
                    latest = Some((tag.op, window));
                }
            }
        }
        for (detail, ops) in found {
            self.violate("the stored order is consistent with real time", detail, ops);
        }
    }

    fn answers_are_explained(&mut self) {
        let mut found = Vec::new();
        for op in self.ops {
            let Some(line) = self.lines.get(&op.stream) else {
                continue;
            };
            let problem = match &op.outcome {
                Outcome::Conflict { actual } => self.conflict(op, line, actual.get()),
                Outcome::Read { version, tags } => read(op, line, version.get(), tags),
                Outcome::Refused { wanted, units } => self.refusal(op, line, *wanted, *units),
                Outcome::Unexpected(error) => Some((
                    "an operation fails only as its contract allows",
                    format!("unexpected answer: {error}"),
                )),
                _ => None,
            };
            if let Some((rule, detail)) = problem {
                found.push((rule, detail, op.id));
            }
        }
        for (rule, detail, id) in found {
            self.violate(rule, detail, vec![id]);
        }
    }

    fn conflict(&self, op: &Op, line: &Line, actual: u64) -> Option<(&'static str, String)> {
        let expected = op.expected?;
        if expected == ExpectedVersion::Any {
            return Some((
                "an append expecting Any never conflicts",
                format!("Conflict naming version {actual}"),
            ));
        }
        if expected.matches(crate::StreamVersion(actual)) {
            return Some((
                "a conflict names a version that does not match",
                format!("Conflict for {expected:?} naming version {actual}, which matches"),
            ));
        }
        if line.possible(actual, op.start, op.end) || self.own_transaction_wrote(op, actual) {
            return None;
        }
        Some((
            "a conflict names a version the stream really had while the call was in flight",
            format!(
                "Conflict for {expected:?} names version {actual}; the stream could only have been at {:?} \
                 during the call (final version {})",
                line.possible_versions(op.start, op.end),
                line.len()
            ),
        ))
    }

    /// Whether an earlier append of the same transaction as `op` left the stream at `version` (uncommitted, so
    /// visible to `op` only).
    fn own_transaction_wrote(&self, op: &Op, version: u64) -> bool {
        let Kind::Path { group, .. } = op.kind else {
            return false;
        };
        self.ops.iter().any(|other| {
            matches!(other.kind, Kind::Path { group: g, .. } if g == group)
                && other.id < op.id
                && other.stream == op.stream
                && match other.outcome {
                    Outcome::Appended { version: v, .. } | Outcome::InDoubt { version: v, .. } => {
                        v.get() == version
                    }
                    Outcome::Failed(_) => true,
                    _ => false,
                }
        })
    }

    fn refusal(
        &self,
        op: &Op,
        line: &Line,
        wanted: u64,
        units: i64,
    ) -> Option<(&'static str, String)> {
        let rule = "a refusal is explained by a state the stream could have had during the call";
        if units >= i64::try_from(wanted).unwrap_or(i64::MAX) {
            return Some((
                rule,
                format!("refused to ship {wanted} with {units} in stock"),
            ));
        }
        // A repeated command id answers with the refusal decided by its first attempt.
        let start = op
            .write
            .as_ref()
            .and_then(|w| self.windows.get(&w.tag))
            .map_or(op.start, |w| w.start.min(op.start));
        let possible = line.possible_versions(start, op.end);
        if possible.iter().any(|c| line.units[*c as usize] == units) {
            return None;
        }
        let states: Vec<String> = possible
            .iter()
            .map(|c| format!("v{c}: {}", line.units[*c as usize]))
            .collect();
        Some((
            rule,
            format!(
                "refused to ship {wanted} on a state of {units} units; the stream could only have been at {}",
                states.join(", ")
            ),
        ))
    }

    fn command_ids_replay_their_outcome(&mut self) {
        let mut by_id: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
        for op in self.ops {
            if let Kind::ExecuteOnce { id, .. } = &op.kind {
                by_id.entry(id.as_str()).or_default().push(op);
            }
        }
        let mut found = Vec::new();
        for (id, attempts) in by_id {
            let mut reference: Option<&Op> = None;
            for op in attempts {
                let definite = matches!(
                    op.outcome,
                    Outcome::Executed { .. } | Outcome::Refused { .. }
                );
                if !definite {
                    continue;
                }
                match reference {
                    None => reference = Some(op),
                    Some(first) if !same_answer(&first.outcome, &op.outcome) => {
                        found.push((
                            format!("command id {id} answered differently"),
                            vec![first.id, op.id],
                        ));
                    }
                    Some(_) => {}
                }
            }
        }
        for (detail, ops) in found {
            self.violate(
                "a repeated command id returns the original outcome",
                detail,
                ops,
            );
        }
    }

    fn shipments_were_allowed(&mut self) {
        let mut found = Vec::new();
        for op in self.ops {
            let Some(write) = &op.write else { continue };
            let Some(Action::Ship(n)) = write.action else {
                continue;
            };
            let Some(first) = self.located.get(&write.tag).and_then(|p| p.first()) else {
                continue;
            };
            let Some(line) = self.lines.get(&first.stream) else {
                continue;
            };
            let before =
                line.units[usize::try_from(first.version.saturating_sub(1)).unwrap_or_default()];
            if before < i64::try_from(n).unwrap_or(i64::MAX) {
                found.push((
                    format!(
                        "shipped {n} at {}@{} with only {before} in stock before it",
                        first.stream, first.version
                    ),
                    op.id,
                ));
            }
        }
        found.dedup_by_key(|(_, id)| *id);
        for (detail, id) in found {
            self.violate(
                "an aggregate's decision holds on the state it was appended to",
                detail,
                vec![id],
            );
        }
    }
}

/// Whether two definite answers of one command id are the same.
fn same_answer(first: &Outcome, later: &Outcome) -> bool {
    match (first, later) {
        (
            Outcome::Executed {
                version: v1,
                position: p1,
                ..
            },
            Outcome::Executed {
                version: v2,
                position: p2,
                ..
            },
        ) => v1 == v2 && p1 == p2,
        (
            Outcome::Refused {
                wanted: w1,
                units: u1,
            },
            Outcome::Refused {
                wanted: w2,
                units: u2,
            },
        ) => w1 == w2 && u1 == u2,
        _ => false,
    }
}

/// Whether a stream read is explained: a version the stream could have had, holding the stored events.
fn read(
    op: &Op,
    line: &Line,
    version: u64,
    tags: &[Option<Tag>],
) -> Option<(&'static str, String)> {
    if !line.possible(version, op.start, op.end) {
        return Some((
            "a read finds a version the stream really had while the call was in flight",
            format!(
                "read version {version}; possible: {:?} (final version {})",
                line.possible_versions(op.start, op.end),
                line.len()
            ),
        ));
    }
    let stored = line
        .tags
        .get(1..=usize::try_from(version).unwrap_or(usize::MAX));
    if stored.is_none_or(|s| s != tags) {
        return Some((
            "a read returns the stored events",
            format!(
                "the read of {} events differs from the stored prefix",
                tags.len()
            ),
        ));
    }
    None
}

/// Whether a write's stored events are whole, contiguous, in order and in its stream.
fn one_piece(op: &Op, events: usize, places: &[Located]) -> Option<String> {
    if places.is_empty() {
        return None;
    }
    let whole = places.len() == events
        && places.iter().enumerate().all(|(i, p)| {
            p.index as usize == i
                && p.stream == op.stream
                && p.version == places[0].version + i as u64
        });
    (!whole).then(|| {
        format!(
            "{} of {events} events stored: {}",
            places.len(),
            describe(places)
        )
    })
}

/// Whether an operation's answer agrees with where its write is stored.
fn as_answered(op: &Op, places: &[Located]) -> Option<(&'static str, String)> {
    let (first, last) = (places.first(), places.last());
    match &op.outcome {
        outcome if outcome.definitely_failed() && !places.is_empty() => Some((
            "no definitely failed operation is stored",
            format!("answered {outcome:?}, yet stored: {}", describe(places)),
        )),
        outcome if outcome.acknowledged() && places.is_empty() => Some((
            "every acknowledged append is stored",
            format!("answered {outcome:?}, yet nothing of it is stored"),
        )),
        Outcome::Appended {
            version,
            first: p1,
            last: p2,
        }
        | Outcome::InDoubt {
            version,
            first: p1,
            last: p2,
        } => {
            let (Some(a), Some(b)) = (first, last) else {
                return None;
            };
            let at = |v: u64| match op.expected {
                Some(ExpectedVersion::Exact(e)) => v == e.get() + 1,
                Some(ExpectedVersion::NoStream) => v == 1,
                Some(ExpectedVersion::StreamExists) => v > 1,
                _ => true,
            };
            (b.version != version.get() || a.position != *p1 || b.position != *p2 || !at(a.version))
                .then(|| {
                    (
                        "an append is stored where its answer says",
                        format!("answered {:?}, stored: {}", op.outcome, describe(places)),
                    )
                })
        }
        Outcome::Executed {
            version, position, ..
        } => {
            let b = last?;
            (b.version != version.get() || b.position != *position).then(|| {
                (
                    "a command's events are stored where its answer says",
                    format!("answered {:?}, stored: {}", op.outcome, describe(places)),
                )
            })
        }
        _ => None,
    }
}

fn describe(places: &[Located]) -> String {
    places
        .iter()
        .map(|p| {
            format!(
                "#{}→{}@{} (position {})",
                p.index, p.stream, p.version, p.position
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}
