//! Subjects: where each event is published, with stream ids escaped so they can never change a subject's meaning.

use annals::StreamId;

use crate::error::{Error, Result};

/// Maps an event's stream to its NATS subject: `<prefix>.<category>.<stream id>` by default, where the category
/// is the stream id's part before the first `-` (`account-42` → `bank.account.account-42`).
///
/// Both tokens are escaped with [`escape_token`]: every byte outside `A-Z a-z 0-9 - _` (so `.`, `*`, `>`,
/// whitespace, `~` and non-ASCII) becomes `~XX` (hex), so a stream id always stays one literal token and
/// different ids always give different subjects.
///
/// ```
/// use annals::StreamId;
/// use annals_nats::Subjects;
///
/// let subjects = Subjects::new("bank")?;
/// assert_eq!(subjects.subject(&StreamId::new("account-42")?), "bank.account.account-42");
/// assert_eq!(subjects.subject(&StreamId::new("a.b *>")?), "bank.a~2Eb~20~2A~3E.a~2Eb~20~2A~3E");
/// assert_eq!(subjects.filter(), "bank.>");
/// assert_eq!(subjects.category_filter("account"), "bank.account.*");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Subjects under `prefix`: one or more tokens of `A-Z a-z 0-9 - _` separated by `.`.
    ///
    /// # Errors
    /// [`Error::Config`] naming the prefix when it is empty, has an empty token or a character outside the set.
    pub fn new(prefix: impl Into<String>) -> Result<Self> {
        let prefix = prefix.into();
        let valid = !prefix.is_empty()
            && prefix
                .split('.')
                .all(|t| !t.is_empty() && t.bytes().all(plain));
        if !valid {
            return Err(Error::Config {
                reason: format!(
                    "subject prefix {prefix:?} must be dot-separated tokens of A-Z, a-z, 0-9, '-' and '_'"
                ),
            });
        }
        Ok(Self { prefix })
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of `stream`'s events.
    pub fn subject(&self, stream: &StreamId) -> String {
        let id = stream.as_str();
        let category = id.split_once('-').map_or(id, |(c, _)| c);
        format!(
            "{}.{}.{}",
            self.prefix,
            escape_token(category),
            escape_token(id)
        )
    }

    /// The wildcard covering every subject of this prefix (`<prefix>.>`): the JetStream stream's subject.
    pub fn filter(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The wildcard covering one category's streams (`<prefix>.<category>.*`), for a consumer's filter.
    pub fn category_filter(&self, category: &str) -> String {
        format!("{}.{}.*", self.prefix, escape_token(category))
    }
}

fn plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Escapes `raw` into one literal subject token: bytes of `A-Z a-z 0-9 - _` stay, every other byte becomes `~`
/// followed by two upper-case hex digits; the empty string becomes `~`. Injective and reversed by
/// [`unescape_token`].
pub fn escape_token(raw: &str) -> String {
    if raw.is_empty() {
        return "~".to_owned();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push('~');
            out.push_str(&format!("{b:02X}"));
        }
    }
    out
}

/// Reverses [`escape_token`]; `None` when `token` is not an escaped token.
pub fn unescape_token(token: &str) -> Option<String> {
    if token == "~" {
        return Some(String::new());
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'~' => {
                let hex = token.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_is_reversible_and_never_yields_subject_syntax() {
        for raw in [
            "account-1",
            "a.b",
            "*",
            ">",
            "a b\tc",
            "~7E",
            "",
            "ünï",
            "x~",
            "-lead",
        ] {
            let token = escape_token(raw);
            assert!(
                !token.is_empty()
                    && !token.contains(['.', '*', '>', ' ', '\t'])
                    && token.is_ascii(),
                "{raw:?} -> {token:?}"
            );
            assert_eq!(unescape_token(&token).as_deref(), Some(raw), "{raw:?}");
        }
        assert_ne!(escape_token("~7E"), escape_token("~"));
        assert_eq!(unescape_token("a.b"), None);
        assert_eq!(unescape_token("~G0"), None);
    }

    #[test]
    fn the_default_subject_is_prefix_category_id() -> Result<()> {
        let s = Subjects::new("feed.bank")?;
        let id = StreamId::new("account-7").map_err(|e| Error::Config {
            reason: e.to_string(),
        })?;
        assert_eq!(s.subject(&id), "feed.bank.account.account-7");
        let plain = StreamId::new("settings").map_err(|e| Error::Config {
            reason: e.to_string(),
        })?;
        assert_eq!(s.subject(&plain), "feed.bank.settings.settings");
        for bad in ["", "a..b", "a.*", "a b", "a.>"] {
            let err = Subjects::new(bad).unwrap_err().to_string();
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        Ok(())
    }
}
