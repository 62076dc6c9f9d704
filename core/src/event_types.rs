//! An event type's persisted names, read from its serde `Deserialize` implementation.

use std::fmt;

use serde::de::{self, Visitor};

use crate::error::{Error, Result};

/// The persisted names of `E`'s variants (aliases included) as serde's derived `Deserialize` declares them: the
/// derive passes them to `Deserializer::deserialize_enum`, which [`Names`] captures and then stops.
///
/// Costs one call into `E::deserialize` and allocates nothing: the names are the derive's own `'static` list.
pub(crate) fn of<E: serde::de::DeserializeOwned>() -> Result<&'static [&'static str]> {
    let mut names = None;
    // The deserializer always refuses after capturing, so the result is an error by design.
    let _ = E::deserialize(Names(&mut names));
    names.ok_or_else(|| Error::Encode {
        reason: format!(
            "{} does not deserialize as an enum (serde's externally tagged representation), so its persisted \
             names are unknown; derive Deserialize or override Event::event_types",
            std::any::type_name::<E>()
        ),
    })
}

/// A deserializer that only records the variant names an enum asks for.
struct Names<'a>(&'a mut Option<&'static [&'static str]>);

/// The refusal [`Names`] answers with: it holds no data.
#[derive(Debug)]
struct Captured;

impl fmt::Display for Captured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("only the variant names are read")
    }
}

impl std::error::Error for Captured {}

impl de::Error for Captured {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Self
    }
}

impl<'de> de::Deserializer<'de> for Names<'_> {
    type Error = Captured;

    fn deserialize_any<V: Visitor<'de>>(
        self,
        _visitor: V,
    ) -> std::result::Result<V::Value, Captured> {
        Err(Captured)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _visitor: V,
    ) -> std::result::Result<V::Value, Captured> {
        *self.0 = Some(variants);
        Err(Captured)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
        unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use crate::Event;

    #[derive(Serialize, Deserialize)]
    enum Renamed {
        #[serde(rename = "MoneyDeposited", alias = "MoneyAdded")]
        Deposited { amount: u64 },
        #[serde(rename = "AccountClosed")]
        Closed,
        #[serde(skip_deserializing)]
        #[allow(dead_code)]
        Local,
    }
    impl Event for Renamed {}

    #[derive(Serialize, Deserialize)]
    struct NotAnEnum {
        amount: u64,
    }
    impl Event for NotAnEnum {}

    #[test]
    fn names_are_the_serde_names_with_aliases_and_without_skipped_variants() {
        assert_eq!(
            Renamed::event_types().unwrap(),
            ["MoneyAdded", "MoneyDeposited", "AccountClosed"]
        );
    }

    #[test]
    fn a_type_that_is_not_an_enum_has_no_names_and_says_so() {
        let error = NotAnEnum::event_types().unwrap_err().to_string();
        assert!(
            error.contains("NotAnEnum") && error.contains("override Event::event_types"),
            "{error}"
        );
    }
}
