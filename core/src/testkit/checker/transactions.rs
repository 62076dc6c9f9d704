//! A client's step through a store's own path ([`ExtraPath`](super::path::ExtraPath)): one or more appends in one
//! transaction of the path's, committed (sometimes with an interrupted first commit) or rolled back.

use crate::{AppendResult, Error, Result};

use super::history::{Kind, Outcome, Write};
use super::path::{Finish, PathAppend, PathRequest};
use super::plan::Plan;
use super::workload::{Client, Shared, append_outcome, tagged_events};

impl Client {
    pub(crate) async fn extra(&mut self, shared: &Shared, plan: &Plan) {
        let Some(path) = usize::try_from(plan.extra % shared.paths.len().max(1) as u64)
            .ok()
            .and_then(|i| shared.paths.get(i))
            .cloned()
        else {
            return;
        };
        let count = 1 + plan.appends % path.max_appends().max(1) as u64;
        let group = shared.history.next_id();
        let mut appends = Vec::new();
        let mut ids = Vec::new();
        for n in 0..count {
            let drawn = if n == 0 { plan.first } else { plan.second };
            let expected = self.expected(&drawn);
            let tag = shared.history.next_id();
            let events = tagged_events(tag, &drawn, false);
            let kind = Kind::Path {
                name: path.name().to_owned(),
                group,
                commit: plan.commit,
            };
            let mut op = self.op(shared, kind, drawn.stream, plan.fault);
            op.expected = Some(expected);
            op.write = Some(Write {
                tag,
                events: events.len(),
                action: None,
            });
            ids.push((shared.history.begin(op), drawn.stream));
            appends.push(PathAppend {
                stream: shared.streams[drawn.stream].clone(),
                expected,
                events,
            });
        }
        let request = PathRequest {
            appends,
            commit: plan.commit,
            interrupt_commit: plan.interrupt_commit,
            interrupt_yields: plan.cancel_yields,
        };
        let report = path.run(request).await;
        for (index, (id, stream)) in ids.into_iter().enumerate() {
            let outcome = path_outcome(report.appends.get(index), &report.finish);
            shared.history.finish(id, outcome.clone());
            if report.finish == Finish::Committed {
                self.observe(stream, &outcome);
            }
        }
    }
}

/// What one append of a path's transaction means for the model, given how the transaction ended.
fn path_outcome(result: Option<&Result<AppendResult>>, finish: &Finish) -> Outcome {
    let Some(result) = result else {
        return Outcome::Failed("not attempted: the path stopped before it".to_owned());
    };
    match (result, finish) {
        (Ok(_), Finish::Committed) => append_outcome(result),
        (Ok(_), Finish::RolledBack) => Outcome::Failed("rolled back".to_owned()),
        (Ok(_), Finish::Refused(reason)) => Outcome::Failed(format!("commit refused: {reason}")),
        (Ok(done), Finish::Unknown(_)) => Outcome::InDoubt {
            version: done.stream_version,
            first: done.first_position,
            last: done.last_position,
        },
        (Err(Error::Conflict { actual, .. }), _) => Outcome::Conflict { actual: *actual },
        (Err(error), Finish::Committed) => Outcome::Unexpected(format!(
            "an append failed ({error}) inside a transaction that then committed"
        )),
        (Err(error), Finish::Unknown(_)) => Outcome::Unknown(error.to_string()),
        (Err(error), _) => Outcome::Failed(error.to_string()),
    }
}
