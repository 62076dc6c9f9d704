//! The tiny aggregate every scenario uses: a shopping cart that items are added to.
//!
//! Both sides of every scenario fold the same events with the same [`Cart::apply`], so the baseline pays for the
//! domain logic exactly as Annals does and the ratio measures the store and the framework alone.

use annals::Aggregate;
use serde::{Deserialize, Serialize};

/// The persisted name of [`CartEvent::ItemAdded`].
pub(crate) const ITEM_ADDED: &str = "ItemAdded";

/// A line added to a cart. Serialized it is about 100 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ItemAdded {
    pub(crate) sku: String,
    pub(crate) quantity: u32,
    pub(crate) unit_price_cents: u64,
    pub(crate) note: String,
}

/// What happened to a cart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum CartEvent {
    #[serde(rename = "ItemAdded")]
    ItemAdded(ItemAdded),
}

impl annals::Event for CartEvent {}

/// The one command: add `quantity` of `sku` at `unit_price_cents`.
#[derive(Debug, Clone)]
pub(crate) struct AddItem {
    pub(crate) sku: String,
    pub(crate) quantity: u32,
    pub(crate) unit_price_cents: u64,
}

impl AddItem {
    /// The `n`th command of a run: deterministic, so both sides do the same work.
    pub(crate) fn nth(n: usize) -> Self {
        Self {
            sku: format!("SKU-{:06}", n % 1_000_000),
            quantity: 1 + (n % 5) as u32,
            unit_price_cents: 199 + (n % 997) as u64,
        }
    }
}

/// Why a cart refuses an item.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CartError {
    #[error("cannot add zero items")]
    ZeroQuantity,
    #[error("the cart is full ({0} lines)")]
    Full(u64),
}

/// A cart's state: how many lines, items and cents it holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Cart {
    pub(crate) lines: u64,
    pub(crate) items: u64,
    pub(crate) total_cents: u64,
}

/// No cart grows past this many lines (never reached by the scenarios; it makes `decide` read the state).
const MAX_LINES: u64 = 1_000_000;

impl Aggregate for Cart {
    type Command = AddItem;
    type Event = CartEvent;
    type Error = CartError;

    fn decide(&self, command: &AddItem) -> Result<Vec<CartEvent>, CartError> {
        if command.quantity == 0 {
            return Err(CartError::ZeroQuantity);
        }
        if self.lines >= MAX_LINES {
            return Err(CartError::Full(self.lines));
        }
        Ok(vec![CartEvent::ItemAdded(item_added(command))])
    }

    fn apply(&mut self, CartEvent::ItemAdded(item): &CartEvent) {
        self.lines += 1;
        self.items += u64::from(item.quantity);
        self.total_cents += u64::from(item.quantity) * item.unit_price_cents;
    }
}

/// The event a command produces.
pub(crate) fn item_added(command: &AddItem) -> ItemAdded {
    ItemAdded {
        sku: command.sku.clone(),
        quantity: command.quantity,
        unit_price_cents: command.unit_price_cents,
        note: "gift wrap; leave at the door".to_owned(),
    }
}

/// The `n`th event of a bulk-written stream (what `AddItem::nth(n)` would produce).
pub(crate) fn nth_event(n: usize) -> CartEvent {
    CartEvent::ItemAdded(item_added(&AddItem::nth(n)))
}

/// The cart id of stream number `n` (the same text on both sides).
pub(crate) fn stream_name(n: usize) -> String {
    format!("cart-{n:06}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_100_bytes() -> anyhow::Result<()> {
        let CartEvent::ItemAdded(item) = nth_event(123_456);
        let bytes = serde_json::to_vec(&item)?.len();
        assert!((80..=120).contains(&bytes), "payload is {bytes} bytes");
        Ok(())
    }
}
