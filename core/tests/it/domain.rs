//! A small inventory domain used by the tests.

use annals::{Aggregate, Event};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) enum Item {
    #[default]
    Unregistered,
    Stocked {
        sku: String,
        quantity: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum ItemEvent {
    #[serde(rename = "ItemRegistered")]
    Registered { sku: String },
    #[serde(rename = "ItemRestocked")]
    Restocked { quantity: u64 },
    #[serde(rename = "ItemShipped")]
    Shipped { quantity: u64 },
}

impl Event for ItemEvent {}

#[derive(Debug, Clone)]
pub(crate) enum ItemCommand {
    Register { sku: String },
    Restock { quantity: u64 },
    Ship { quantity: u64 },
    Touch,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ItemError {
    #[error("the item is already registered")]
    AlreadyRegistered,
    #[error("the item is not registered")]
    NotRegistered,
    #[error("only {available} in stock, cannot ship {requested}")]
    OutOfStock { available: u64, requested: u64 },
}

impl Aggregate for Item {
    type Command = ItemCommand;
    type Event = ItemEvent;
    type Error = ItemError;

    fn decide(&self, command: &ItemCommand) -> Result<Vec<ItemEvent>, ItemError> {
        match (self, command) {
            (Item::Unregistered, ItemCommand::Register { sku }) => {
                Ok(vec![ItemEvent::Registered { sku: sku.clone() }])
            }
            (Item::Stocked { .. }, ItemCommand::Register { .. }) => {
                Err(ItemError::AlreadyRegistered)
            }
            (Item::Unregistered, _) => Err(ItemError::NotRegistered),
            (Item::Stocked { .. }, ItemCommand::Restock { quantity }) => {
                Ok(vec![ItemEvent::Restocked {
                    quantity: *quantity,
                }])
            }
            (
                Item::Stocked { quantity, .. },
                ItemCommand::Ship {
                    quantity: requested,
                },
            ) => {
                if requested > quantity {
                    Err(ItemError::OutOfStock {
                        available: *quantity,
                        requested: *requested,
                    })
                } else {
                    Ok(vec![ItemEvent::Shipped {
                        quantity: *requested,
                    }])
                }
            }
            (Item::Stocked { .. }, ItemCommand::Touch) => Ok(vec![]),
        }
    }

    fn apply(&mut self, event: &ItemEvent) {
        match (self, event) {
            (this @ Item::Unregistered, ItemEvent::Registered { sku }) => {
                *this = Item::Stocked {
                    sku: sku.clone(),
                    quantity: 0,
                }
            }
            (Item::Stocked { quantity, .. }, ItemEvent::Restocked { quantity: added }) => {
                *quantity += added
            }
            (Item::Stocked { quantity, .. }, ItemEvent::Shipped { quantity: shipped }) => {
                *quantity -= shipped
            }
            _ => {}
        }
    }
}

impl Item {
    pub(crate) fn quantity(&self) -> u64 {
        match self {
            Item::Unregistered => 0,
            Item::Stocked { quantity, .. } => *quantity,
        }
    }
}
