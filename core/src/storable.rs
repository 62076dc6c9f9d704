//! What every store can keep: the limits of the strictest backend (PostgreSQL's `text` and `jsonb` cannot hold a
//! NUL character; its `integer` schema version column ends at 2^31 - 1), applied by [`check_append`] so that every
//! store refuses the same input with the same error.
//!
//! [`check_append`]: crate::check_append

use serde_json::Value;

use crate::event::NewEvent;

/// The highest schema version an event may carry (2^31 - 1, the largest PostgreSQL `integer`).
pub const MAX_SCHEMA_VERSION: u32 = i32::MAX as u32;

/// Why event `index` of a batch cannot be stored by every store, if it cannot.
pub(crate) fn unstorable(index: usize, event: &NewEvent) -> Option<String> {
    let nul = |place: String| {
        Some(format!(
            "event #{index} has a NUL character (\\u0000) in {place}, which not every store can keep \
             (PostgreSQL cannot); remove it or encode it differently"
        ))
    };
    if event.schema_version > MAX_SCHEMA_VERSION {
        return Some(format!(
            "event #{index} has schema version {}; stores keep at most {MAX_SCHEMA_VERSION}",
            event.schema_version
        ));
    }
    if event.event_type.contains('\0') {
        return nul("its event type".to_owned());
    }
    if let Some(place) = nul_in(&event.payload, "its payload") {
        return nul(place);
    }
    let metadata = &event.metadata;
    if metadata.correlation_id.as_deref().is_some_and(has_nul) {
        return nul("its metadata (correlation id)".to_owned());
    }
    if metadata.causation_id.as_deref().is_some_and(has_nul) {
        return nul("its metadata (causation id)".to_owned());
    }
    for (key, value) in &metadata.extra {
        if has_nul(key) {
            return nul(format!("a key of its metadata at /{}", segment(key)));
        }
        if contains_nul(value)
            && let Some(place) = nul_in(value, &format!("its metadata at /{}", segment(key)))
        {
            return nul(place);
        }
    }
    None
}

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Where in `value` the first NUL character is (`"{what} at /a/0"`, or `"a key of {what} at /a"`), walking the
/// tree with an explicit stack so that deep documents cannot overflow the call stack.
fn nul_in(value: &Value, what: &str) -> Option<String> {
    if !contains_nul(value) {
        return None;
    }
    let mut pending: Vec<(&Value, String)> = vec![(value, String::new())];
    while let Some((value, pointer)) = pending.pop() {
        match value {
            Value::String(text) if has_nul(text) => {
                return Some(format!("{what} at {}", root(&pointer)));
            }
            Value::Array(items) => {
                pending.extend(
                    items
                        .iter()
                        .enumerate()
                        .rev()
                        .map(|(i, item)| (item, format!("{pointer}/{i}"))),
                );
            }
            Value::Object(map) => {
                if let Some(key) = map.keys().find(|key| has_nul(key)) {
                    return Some(format!("a key of {what} at {}/{}", pointer, segment(key)));
                }
                let children: Vec<_> = map
                    .iter()
                    .map(|(key, item)| (item, format!("{pointer}/{}", segment(key))))
                    .collect();
                pending.extend(children.into_iter().rev());
            }
            _ => {}
        }
    }
    None
}

/// Whether any string or key in `value` holds a NUL character: the check every append pays, so it allocates
/// nothing for flat documents (only nested containers wait on the explicit stack) and builds no pointer; the
/// pointer is worked out by [`nul_in`] only when there is a NUL to report.
fn contains_nul(value: &Value) -> bool {
    let mut pending: Vec<&Value> = Vec::new();
    let mut next = Some(value);
    while let Some(value) = next.take().or_else(|| pending.pop()) {
        match value {
            Value::String(text) if has_nul(text) => return true,
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(text) if has_nul(text) => return true,
                        Value::Array(_) | Value::Object(_) => pending.push(item),
                        _ => {}
                    }
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    if has_nul(key) {
                        return true;
                    }
                    match item {
                        Value::String(text) if has_nul(text) => return true,
                        Value::Array(_) | Value::Object(_) => pending.push(item),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    false
}

/// A JSON pointer segment (RFC 6901 escapes), with control characters shown escaped.
fn segment(key: &str) -> String {
    key.replace('~', "~0")
        .replace('/', "~1")
        .escape_debug()
        .to_string()
}

fn root(pointer: &str) -> &str {
    if pointer.is_empty() {
        "the root"
    } else {
        pointer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nul_characters_are_found_anywhere_and_named_by_pointer() {
        let with = |payload| NewEvent::new("T", payload);
        let reason = |payload| unstorable(2, &with(payload)).unwrap_or_default();
        assert!(reason(json!({"a": [1, {"b/c": "x\u{0}"}]})).contains("its payload at /a/1/b~1c"));
        assert!(reason(json!("\u{0}")).contains("its payload at the root"));
        assert!(reason(json!({"k\u{0}": 1})).contains("a key of its payload at /k\\0"));
        assert_eq!(
            unstorable(0, &with(json!({"text": "\\u0000", "n": 1}))),
            None
        );
    }

    #[test]
    fn the_fast_scan_finds_what_the_pointer_walk_names() {
        let reason = |payload| unstorable(0, &NewEvent::new("T", payload));
        assert!(
            reason(json!([[["ok"], ["\u{0}"]]]))
                .unwrap_or_default()
                .contains("its payload at /0/1/0")
        );
        assert!(
            reason(json!({"a": {"b": {"c\u{0}": true}}}))
                .unwrap_or_default()
                .contains("a key of its payload at /a/b/c\\0")
        );
        let mut deep = json!("\u{0}");
        for _ in 0..500 {
            deep = json!([deep]);
        }
        assert!(reason(deep).is_some());
        let clean = json!({"a": [1, 2.5, null, true, {"b": ["x", {"c": "y"}]}]});
        assert_eq!(reason(clean), None);
    }
}
