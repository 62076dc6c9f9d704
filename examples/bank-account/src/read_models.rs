//! The read models: `balances` (each account's state, folded by [`Account`] itself) and `history` (one document per
//! account movement), projections from the account events that run unchanged in memory and on PostgreSQL.

use annals::{Position, Recorded};
use annals_projections::{
    BoxError, DocumentReader, Documents, Projections, Result, Snapshots, StatefulProjection,
    async_trait,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::account::{Account, AccountEvent, AccountId, AccountStatus};
use crate::transfer_legs::TransferMove;

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

/// What `GET /accounts/{id}` answers, from the account's snapshot in the `balances` read model.
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

/// The `history` projection: an entry per movement, with the balance the account's state has after it.
pub struct History;

/// An event's entry in the history: its kind, the amount it moved and the transfer behind it.
fn entry_of(event: &AccountEvent) -> (&'static str, Option<u64>, Option<&TransferMove>) {
    match event {
        AccountEvent::Opened { .. } => ("opened", None, None),
        AccountEvent::Deposited { amount } => ("deposit", Some(*amount), None),
        AccountEvent::Withdrawn { amount } => ("withdrawal", Some(*amount), None),
        AccountEvent::Closed {} => ("closed", None, None),
        AccountEvent::TransferDebited(m) => ("transfer_out", Some(m.amount), Some(m)),
        AccountEvent::TransferCredited(m) => ("transfer_in", Some(m.amount), Some(m)),
        AccountEvent::TransferRefunded(m) => ("transfer_refund", Some(m.amount), Some(m)),
    }
}

#[async_trait]
impl StatefulProjection for History {
    type Aggregate = Account;

    fn name(&self) -> &str {
        "history"
    }

    /// Version 1 kept its own running balance; version 2 reads it from the account's state.
    fn version(&self) -> u32 {
        2
    }

    async fn apply(
        &self,
        event: Recorded<'_, AccountEvent>,
        account: &Account,
        docs: &mut Documents<'_>,
    ) -> Result<(), BoxError> {
        let id: AccountId = event.stream_key()?;
        let (kind, amount, transfer) = entry_of(event.event());
        let item = HistoryItem {
            position: event.position().get(),
            kind: kind.to_owned(),
            amount,
            balance_after: account.balance,
            recorded_at: event.recorded_at(),
            counterparty: transfer.map(|m| m.counterparty.clone()),
            transfer: transfer.map(|m| m.transfer.clone()),
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
/// stored under an old name reaches them under its current one). `balances` is at version 2 since it keeps
/// snapshots of [`Account`] (version 1 kept `Balance` rows).
pub(crate) fn register(projections: Projections) -> Projections {
    projections
        .stateful(Snapshots::<Account>::new("balances").version(2))
        .stateful(History)
}

/// The query side of the read models, as the HTTP handlers use it. Read-your-writes waits on the reader of the
/// read model a query reads (`MinPosition::wait_for`), at most its `max_wait`.
#[derive(Clone)]
pub(crate) struct ReadModels {
    pub(crate) balances: DocumentReader,
    pub(crate) history: DocumentReader,
}

impl ReadModels {
    pub(crate) fn new(projections: &Projections) -> anyhow::Result<Self> {
        Ok(Self {
            balances: projections.documents("balances")?,
            history: projections.documents("history")?,
        })
    }

    pub(crate) async fn balance(&self, id: &AccountId) -> Result<Option<Balance>> {
        let snapshot = self.balances.snapshot::<Account>(id.stream()).await?;
        Ok(snapshot.map(|snapshot| Balance {
            id: id.to_string(),
            owner: snapshot.state.owner,
            balance: snapshot.state.balance,
            status: snapshot.state.status,
            version: snapshot.version.get(),
        }))
    }

    /// At most `limit` entries of `id`'s history after the entry at position `after` (from the first when
    /// `None`), read as one page: a long history is never loaded whole.
    pub(crate) async fn history_page(
        &self,
        id: &AccountId,
        after: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let after = after.map(|p| entry_key(id, Position(p)));
        let entries = self
            .history
            .page::<HistoryItem>("entries", &format!("{id}/"), after.as_deref(), limit)
            .await?;
        let items: Vec<HistoryItem> = entries.into_iter().map(|(_, item)| item).collect();
        let next = (items.len() == limit)
            .then(|| items.last().map(|item| item.position))
            .flatten();
        Ok(HistoryPage { items, next })
    }
}
