//! What a run reports: [`Violation`]s of the model, a [`Failure`] that prints the seed, the rules broken and the
//! operations involved (an excerpt, not the whole history), and the [`Summary`] of a run.

use std::collections::BTreeMap;
use std::fmt;

use super::config::Config;
use super::history::{Op, Outcome};

/// How many violations a failure prints in full.
const PRINTED_VIOLATIONS: usize = 12;

/// How many operations a violation prints.
const PRINTED_OPS: usize = 6;

/// One rule of the model that the history breaks.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The rule, in a few words.
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
    /// The operations involved (ids in the history).
    pub ops: Vec<u64>,
}

impl Violation {
    pub(crate) fn new(rule: &'static str, detail: impl Into<String>, ops: Vec<u64>) -> Self {
        Self {
            rule,
            detail: detail.into(),
            ops,
        }
    }
}

/// What a run did: operations per kind and outcome, events stored, faults injected.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Operations issued.
    pub ops: usize,
    /// Operations per path.
    pub by_kind: BTreeMap<String, usize>,
    /// Operations per outcome.
    pub by_outcome: BTreeMap<&'static str, usize>,
    /// Events in the store at the end.
    pub events: usize,
    /// Connections the killer hook killed.
    pub killed: usize,
    /// Events each follower saw.
    pub followed: Vec<usize>,
}

impl Summary {
    pub(crate) fn of(ops: &[Op], events: usize, killed: usize, followed: Vec<usize>) -> Self {
        let mut summary = Self {
            ops: ops.len(),
            events,
            killed,
            followed,
            ..Self::default()
        };
        for op in ops {
            let kind = format!("{:?}", op.kind);
            let kind = kind
                .split([' ', '{', '('])
                .next()
                .unwrap_or_default()
                .to_owned();
            *summary.by_kind.entry(kind).or_default() += 1;
            *summary
                .by_outcome
                .entry(outcome_name(&op.outcome))
                .or_default() += 1;
        }
        summary
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Appended { .. } => "appended",
        Outcome::Executed {
            replayed: false, ..
        } => "executed",
        Outcome::Executed { replayed: true, .. } => "replayed",
        Outcome::Read { .. } => "read",
        Outcome::Conflict { .. } => "conflict",
        Outcome::GaveUp => "gave up",
        Outcome::Refused { .. } => "refused",
        Outcome::Failed(_) => "failed",
        Outcome::InDoubt { .. } => "in doubt",
        Outcome::Unknown(reason) if reason.starts_with("cancelled") => "cancelled",
        Outcome::Unknown(reason) if reason.starts_with("pending") => "never answered",
        Outcome::Unknown(_) => "unknown",
        Outcome::Unexpected(_) => "unexpected",
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations {:?}, outcomes {:?}, {} events stored, {} connections killed, followers saw {:?}",
            self.ops, self.by_kind, self.by_outcome, self.events, self.killed, self.followed
        )
    }
}

/// A run whose history the model does not explain (or that could not run). Its message starts with
/// `checker seed <N>` and says how to replay it.
#[derive(Debug)]
pub struct Failure {
    /// The run's configuration (its seed first).
    pub config: Config,
    /// The rules broken.
    pub violations: Vec<Violation>,
    /// The operations the printed violations name.
    pub excerpt: Vec<Op>,
    /// What the run did.
    pub summary: Summary,
}

impl Failure {
    pub(crate) fn new(
        config: &Config,
        violations: Vec<Violation>,
        ops: &[Op],
        summary: Summary,
    ) -> Self {
        let named: std::collections::BTreeSet<u64> = violations
            .iter()
            .take(PRINTED_VIOLATIONS)
            .flat_map(|v| v.ops.iter().take(PRINTED_OPS).copied())
            .collect();
        let excerpt = ops
            .iter()
            .filter(|op| named.contains(&op.id))
            .cloned()
            .collect();
        Self {
            config: config.clone(),
            violations,
            excerpt,
            summary,
        }
    }

    /// A run that could not be carried out (the store failed outside any checked operation).
    pub(crate) fn setup(config: &Config, what: impl Into<String>) -> Self {
        Self::new(
            config,
            vec![Violation::new(
                "the run could not be carried out",
                what,
                vec![],
            )],
            &[],
            Summary::default(),
        )
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checker seed {} ({}): {} violation(s) of the event-store model; {}",
            self.config.seed,
            self.config.label,
            self.violations.len(),
            self.config.replay_hint()
        )?;
        for violation in self.violations.iter().take(PRINTED_VIOLATIONS) {
            writeln!(f, "- {}: {}", violation.rule, violation.detail)?;
            for id in violation.ops.iter().take(PRINTED_OPS) {
                if let Some(op) = self.excerpt.iter().find(|op| op.id == *id) {
                    writeln!(f, "    {op}")?;
                }
            }
        }
        if self.violations.len() > PRINTED_VIOLATIONS {
            writeln!(
                f,
                "- … and {} more",
                self.violations.len() - PRINTED_VIOLATIONS
            )?;
        }
        write!(f, "run: {}", self.summary)
    }
}

impl std::error::Error for Failure {}
