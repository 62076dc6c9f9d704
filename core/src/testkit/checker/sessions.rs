//! A client's command-session step: a read (`fold_stream` or `visit_stream`), then an append at
//! `Exact(read version)` as the `Repository` makes it, sometimes a second one after it.

use crate::{EventStore, ExpectedVersion, Result, StreamVersion};

use super::history::{Kind, Outcome, Write};
use super::plan::Plan;
use super::workload::{Client, Shared, append_outcome, tag_of, tagged_events};

impl Client {
    pub(crate) async fn session(&mut self, shared: &Shared, plan: &Plan) {
        let stream = plan.first.stream;
        let stream_id = &shared.streams[stream];
        let store = self.store.clone();
        let mut session = store.command_session();
        let read = self.op(
            shared,
            Kind::SessionRead { lean: plan.lean },
            stream,
            plan.fault,
        );
        let read = shared.history.begin(read);
        let (mut version, mut tags) = (StreamVersion::NONE, Vec::new());
        let mut visit = |event: &crate::RecordedEvent| -> Result<()> {
            version = event.stream_version;
            tags.push(tag_of(event));
            Ok(())
        };
        let result = if plan.lean {
            session.fold_stream(stream_id, &mut visit).await
        } else {
            session.visit_stream(stream_id, &mut visit).await
        };
        let outcome = match result {
            Ok(()) => Outcome::Read { version, tags },
            Err(error) => Outcome::Failed(format!("the read failed: {error}")),
        };
        shared.history.finish(read, outcome.clone());
        self.observe(stream, &outcome);
        let Outcome::Read { version, .. } = outcome else {
            return;
        };
        let mut expected = ExpectedVersion::Exact(version);
        let mut first = plan.first;
        first.events = if plan.again { 1 } else { first.events.min(2) };
        for round in 0..(1 + usize::from(plan.again)) {
            let tag = shared.history.next_id();
            let events = tagged_events(tag, &first, false);
            let mut op = self.op(shared, Kind::SessionAppend, stream, plan.fault);
            op.expected = Some(expected);
            op.write = Some(Write {
                tag,
                events: events.len(),
                action: None,
            });
            let id = shared.history.begin(op);
            let outcome = append_outcome(&session.append(stream_id, expected, events).await);
            shared.history.finish(id, outcome.clone());
            self.observe(stream, &outcome);
            match outcome {
                Outcome::Appended { version, .. } if round == 0 => {
                    expected = ExpectedVersion::Exact(version);
                }
                _ => break,
            }
        }
    }
}
