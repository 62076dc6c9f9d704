//! The given/when/then fixture on the inventory domain.

use annals::testing::given;

use crate::domain::{Item, ItemCommand, ItemError, ItemEvent};

fn registered() -> ItemEvent {
    ItemEvent::Registered {
        sku: "sku-1".into(),
    }
}

#[test]
fn registering_a_new_item() {
    let state = given::<Item>([])
        .when(ItemCommand::Register {
            sku: "sku-1".into(),
        })
        .then([registered()]);
    assert_eq!(state.quantity(), 0);
}

#[test]
fn registering_twice_is_refused() {
    given::<Item>([registered()])
        .when(ItemCommand::Register {
            sku: "sku-1".into(),
        })
        .then_error(ItemError::AlreadyRegistered);
}

#[test]
fn commands_on_a_missing_item_are_refused() {
    given::<Item>([])
        .when(ItemCommand::Ship { quantity: 1 })
        .then_error(ItemError::NotRegistered);
}

#[test]
fn shipping_more_than_in_stock_is_refused() {
    given::<Item>([registered(), ItemEvent::Restocked { quantity: 3 }])
        .when(ItemCommand::Ship { quantity: 4 })
        .then_error_matches(|e| {
            matches!(
                e,
                ItemError::OutOfStock {
                    available: 3,
                    requested: 4
                }
            )
        });
}

#[test]
fn shipping_from_stock() {
    let state = given::<Item>([registered(), ItemEvent::Restocked { quantity: 3 }])
        .when(ItemCommand::Ship { quantity: 2 })
        .then([ItemEvent::Shipped { quantity: 2 }]);
    assert_eq!(state.quantity(), 1);
}

#[test]
fn a_command_may_produce_no_events() {
    given::<Item>([registered()])
        .when(ItemCommand::Touch)
        .then([]);
}

#[test]
fn every_variant_shape_decodes_from_the_stored_text() {
    use annals::{Event, Payload};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        Unit,
        Newtype(u32),
        Tuple(u32, String),
        Struct { a: bool },
    }
    impl Event for Shapes {}

    for shape in [
        Shapes::Unit,
        Shapes::Newtype(7),
        Shapes::Tuple(1, "x".into()),
        Shapes::Struct { a: true },
    ] {
        let (name, payload) = shape.encode().unwrap();
        assert_eq!(
            Shapes::decode(&name, &Payload::from(payload)).unwrap(),
            shape
        );
    }
    // PostgreSQL's jsonb text, with its spacing, decodes the same.
    let stored = Payload::from_json(r#"[1, "x"]"#).unwrap();
    assert_eq!(
        Shapes::decode("Tuple", &stored).unwrap(),
        Shapes::Tuple(1, "x".into())
    );
    let empty = Payload::from_json("{}").unwrap();
    assert_eq!(Shapes::decode("Unit", &empty).unwrap(), Shapes::Unit);
    let null = Payload::from(serde_json::Value::Null);
    let unknown = Shapes::decode("Vanished", &null).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown variant `Vanished`"),
        "{unknown}"
    );
    let wrong =
        Shapes::decode("Struct", &Payload::from(serde_json::json!({"a": "yes"}))).unwrap_err();
    assert!(wrong.to_string().contains("invalid type"), "{wrong}");
    let surplus = Shapes::decode("Unit", &Payload::from(serde_json::json!(1))).unwrap_err();
    assert!(surplus.to_string().contains("no payload"), "{surplus}");
}
