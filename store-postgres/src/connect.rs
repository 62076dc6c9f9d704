//! Connecting a pool from a URL, with errors that name the server but never the password.

use std::str::FromStr;

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::error::Error;

/// Parses `url` and connects a pool with sqlx's default options.
pub(crate) async fn connect_pool(url: &str) -> Result<PgPool, Error> {
    let options = PgConnectOptions::from_str(url).map_err(|e| Error::InvalidUrl {
        url: redact(url),
        reason: without_password(&e.to_string(), url),
    })?;
    let host = options.get_host().to_owned();
    let port = options.get_port();
    let user = options.get_username().to_owned();
    let database = options.get_database().unwrap_or(&user).to_owned();
    crate::store::PostgresStore::pool_options()
        .connect_with(options)
        .await
        .map_err(|source| Error::Connect {
            host,
            port,
            database,
            user,
            source,
        })
}

/// The password of a `scheme://user:password@host/...` URL, if it has one.
fn password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let userinfo = &rest[..rest.rfind('@')?];
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `url` with its password replaced by `***`.
pub(crate) fn redact(url: &str) -> String {
    match password(url) {
        Some(password) => url.replacen(&format!(":{password}@"), ":***@", 1),
        None => url.to_owned(),
    }
}

/// `message` with any copy of the URL's password replaced by `***`.
fn without_password(message: &str, url: &str) -> String {
    match password(url) {
        Some(password) => message.replace(password, "***"),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cr:et@db:5432/orders"),
            "postgres://app:***@db:5432/orders"
        );
        assert_eq!(
            redact("postgres://app@db/orders"),
            "postgres://app@db/orders"
        );
        assert_eq!(
            without_password("bad s3cret here", "postgres://u:s3cret@h/d"),
            "bad *** here"
        );
    }
}
