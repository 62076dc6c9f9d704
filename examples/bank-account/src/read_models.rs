//! The read models: `balances` (one document per account) and `history` (one document per account movement),
//! projections from the account events that run unchanged in memory and on PostgreSQL.

use std::time::Duration;

use annals::{Position, Recorded, StreamKey};
use annals_projections::{
    BoxError, DocumentReader, Documents, EventProjection, Projections, async_trait,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::{AccountEvent, AccountId, AccountStatus};
use crate::api::error::ApiError;
use crate::transfer_legs::{TransferMove, leg_movement};

/// The most history entries one page holds (and how many a page holds when `?limit=` is not given).
pub const MAX_HISTORY_PAGE: usize = 10_000;

/// One page of an account's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryPage {
    /// The entries, in position order.
    pub items: Vec<HistoryItem>,
    /// The `?after=` of the next page: the last entry's position when the page is full, else `None`.
    pub next: Option<u64>,
}

/// How long a read with `min_position` waits for the read model before answering `504 projection_lagging`.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// A row of the `balances` read model: what `GET /accounts/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account id.
    pub id: String,
    /// The holder's name.
    pub owner: String,
    /// Minor units held.
    pub balance: u64,
    /// `open` or `closed`.
    pub status: AccountStatus,
    /// The account stream's version this row reflects.
    pub version: u64,
}

/// An entry of the `history` read model: one movement of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryItem {
    /// The event's global position.
    pub position: u64,
    /// `opened`, `deposit`, `withdrawal`, `closed`, or for transfers `transfer_out`, `transfer_in`,
    /// `transfer_refund`.
    pub kind: String,
    /// Minor units moved (`null` for opening and closing).
    pub amount: Option<u64>,
    /// The balance after this movement.
    pub balance_after: u64,
    /// When the event was recorded.
    pub recorded_at: DateTime<Utc>,
    /// The transfer that caused the movement (absent for other movements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<String>,
    /// The transfer's other account (absent for other movements).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counterparty: Option<String>,
}

/// The `balances` projection.
pub struct Balances;

/// The `history` projection.
pub struct History;

/// An account event as a movement of money: its history kind, the amount moved (in when `credit`), and the
/// transfer behind it.
pub(crate) struct Movement<'e> {
    pub(crate) kind: &'static str,
    pub(crate) amount: Option<u64>,
    pub(crate) credit: bool,
    pub(crate) transfer: Option<&'e TransferMove>,
}

impl<'e> Movement<'e> {
    fn of(event: &'e AccountEvent) -> Self {
        let (kind, amount, credit) = match event {
            AccountEvent::Opened { .. } => ("opened", None, true),
            AccountEvent::Deposited { amount } => ("deposit", Some(*amount), true),
            AccountEvent::Withdrawn { amount } => ("withdrawal", Some(*amount), false),
            AccountEvent::Closed {} => ("closed", None, true),
            leg => return leg_movement(leg).unwrap_or_else(|| unreachable!("{leg:?} is a leg")),
        };
        let transfer = None;
        Self {
            kind,
            amount,
            credit,
            transfer,
        }
    }

    /// The balance after this movement; an overflow means the log breaks the domain's rules, which the
    /// projection reports instead of wrapping.
    fn apply(&self, balance: u64, event: &Recorded<'_, AccountEvent>) -> Result<u64, BoxError> {
        let after = match (self.amount, self.credit) {
            (None, _) => Some(balance),
            (Some(amount), true) => balance.checked_add(amount),
            (Some(amount), false) => balance.checked_sub(amount),
        };
        after.ok_or_else(|| {
            let at = event.position();
            format!(
                "the {} at position {at} takes the balance out of range",
                self.kind
            )
            .into()
        })
    }
}

#[async_trait]
impl EventProjection for Balances {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "balances"
    }

    async fn apply(
        &self,
        event: Recorded<'_, AccountEvent>,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let Some(id) = AccountId::from_stream(event.stream_id()) else {
            return Ok(());
        };
        let mut row = match event.event() {
            AccountEvent::Opened { owner } => Balance {
                id: id.to_string(),
                owner: owner.clone(),
                balance: 0,
                status: AccountStatus::Open,
                version: 0,
            },
            change => docs
                .get("accounts", &id)
                .await?
                .ok_or_else(|| format!("{change:?} for account {id}, which was never opened"))?,
        };
        row.balance = Movement::of(event.event()).apply(row.balance, &event)?;
        if let AccountEvent::Closed {} = event.event() {
            row.status = AccountStatus::Closed;
        }
        row.version = event.stream_version().get();
        docs.put("accounts", &id, &row)?;
        Ok(())
    }
}

#[async_trait]
impl EventProjection for History {
    type Event = AccountEvent;

    fn name(&self) -> &str {
        "history"
    }

    async fn apply(
        &self,
        event: Recorded<'_, AccountEvent>,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let Some(id) = AccountId::from_stream(event.stream_id()) else {
            return Ok(());
        };
        let before: u64 = docs.get("running_balance", &id).await?.unwrap_or(0);
        let movement = Movement::of(event.event());
        let after = movement.apply(before, &event)?;
        docs.put("running_balance", &id, &after)?;
        let item = HistoryItem {
            position: event.position().get(),
            kind: movement.kind.to_owned(),
            amount: movement.amount,
            balance_after: after,
            recorded_at: event.recorded_at(),
            counterparty: movement.transfer.map(|m| m.counterparty.clone()),
            transfer: movement.transfer.map(|m| m.transfer.clone()),
        };
        docs.put("entries", entry_key(&id, event.position()), &item)?;
        Ok(())
    }
}

/// `{account}/{position, zero-padded}`: an account's entries list in position order under the prefix `{account}/`.
fn entry_key(id: &AccountId, position: Position) -> String {
    format!("{id}/{:020}", position.get())
}

/// Registers the application's projections on `projections` (each also upcasts the account events, so an event
/// stored under an old name reaches them under its current one).
pub(crate) fn register(projections: Projections) -> Projections {
    projections.typed(Balances).typed(History)
}

/// The query side of the read models, as the HTTP handlers use it.
#[derive(Clone)]
pub(crate) struct ReadModels {
    balances: DocumentReader,
    history: DocumentReader,
    pub(crate) max_wait: Duration,
}

impl ReadModels {
    pub(crate) fn new(projections: &Projections) -> anyhow::Result<Self> {
        Ok(Self {
            balances: projections.documents("balances")?,
            history: projections.documents("history")?,
            max_wait: MAX_WAIT,
        })
    }

    pub(crate) async fn balance(
        &self,
        id: &AccountId,
        min_position: Option<Position>,
    ) -> Result<Option<Balance>, ApiError> {
        wait(&self.balances, min_position, self.max_wait).await?;
        self.balances
            .get("accounts", id)
            .await
            .map_err(ApiError::internal)
    }

    /// At most `limit` entries of `id`'s history after the entry at position `after` (from the first when
    /// `None`), read as one page: a long history is never loaded whole.
    pub(crate) async fn history_page(
        &self,
        id: &AccountId,
        min_position: Option<Position>,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, ApiError> {
        wait(&self.history, min_position, self.max_wait).await?;
        let after = after.map(|p| entry_key(id, Position(p)));
        let entries = self
            .history
            .page::<HistoryItem>("entries", &format!("{id}/"), after.as_deref(), limit)
            .await
            .map_err(ApiError::internal)?;
        let items: Vec<HistoryItem> = entries.into_iter().map(|(_, item)| item).collect();
        let next = (items.len() == limit)
            .then(|| items.last().map(|item| item.position))
            .flatten();
        Ok(HistoryPage { items, next })
    }
}

async fn wait(
    reader: &DocumentReader,
    min_position: Option<Position>,
    max_wait: Duration,
) -> Result<(), ApiError> {
    let Some(position) = min_position else {
        return Ok(());
    };
    match reader.wait_for_position(position, max_wait).await {
        Ok(_) => Ok(()),
        Err(annals_projections::Error::Lagging { reached, .. }) => {
            Err(ApiError::lagging(reader.projection(), reached, position))
        }
        Err(other) => Err(ApiError::internal(other)),
    }
}
