//! TLS: `sslmode=require`, `verify-ca` and `verify-full` URLs, against the machine's PostgreSQL, which runs with
//! `ssl=on` and Debian's self-signed snakeoil certificate (issued to `localhost`).

use std::str::FromStr;

use annals_postgres::PostgresStore;
use sqlx::postgres::PgConnectOptions;

const SERVER_CERTIFICATE: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";
/// A real root certificate that did not sign the server's.
const UNRELATED_ROOT: &str = "/etc/ssl/certs/ISRG_Root_X1.pem";

/// The test server's URL with `host` and the query `params`.
fn url(host: &str, params: &str) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let options = PgConnectOptions::from_str(&base).unwrap();
    format!(
        "postgres://{}@{host}:{}/{}?{params}",
        options.get_username(),
        options.get_port(),
        options.get_database().unwrap_or("postgres"),
    )
}

async fn uses_tls(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    let store = PostgresStore::connect(&url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    assert!(uses_tls(&store).await);
}

#[tokio::test]
async fn verify_ca_and_verify_full_accept_the_servers_certificate() {
    for mode in ["verify-ca", "verify-full"] {
        let store = PostgresStore::connect(&url(
            "localhost",
            &format!("sslmode={mode}&sslrootcert={SERVER_CERTIFICATE}"),
        ))
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert!(uses_tls(&store).await, "{mode}");
    }
}

#[track_caller]
fn assert_tls_refused(result: Result<PostgresStore, annals_postgres::Error>, needle: &str) {
    match result {
        Err(error @ annals_postgres::Error::Connect { .. }) => {
            let message = error.to_string();
            assert!(
                message.contains(needle),
                "{message:?} should say {needle:?}"
            );
        }
        other => panic!("the connection must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn a_wrong_root_certificate_is_refused_with_an_error_naming_the_tls_problem() {
    let refused = PostgresStore::connect(&url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={UNRELATED_ROOT}"),
    ))
    .await;
    assert_tls_refused(refused, "invalid peer certificate: UnknownIssuer");
    // The right root, but a host name the certificate was not issued to.
    let refused = PostgresStore::connect(&url(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={SERVER_CERTIFICATE}"),
    ))
    .await;
    assert_tls_refused(refused, "certificate not valid for name \"127.0.0.1\"");
}
