//! Which database failures are transient (retrying the same work later may succeed) and which are permanent.
//!
//! The rules are those of `annals-projections` (`projections/src/error.rs`), repeated here because that crate
//! keeps them private; they belong in one shared place.

/// Whether a database error may go away when the same work is tried again.
///
/// Transient: connection and pool failures, and the SQLSTATE classes `08` (connection exception), `40`
/// (serialization failure `40001`, deadlock `40P01`), `53` (insufficient resources), `57` (operator
/// intervention: admin shutdown `57P01`, statement timeout or cancel `57014`), `58` (system error), and `55P03`
/// (lock not available: `lock_timeout`). Permanent: every other SQLSTATE, among them `22` (data exception),
/// `23` (integrity violation), `25` (invalid transaction state: `25P02`, a statement in an aborted
/// transaction), `42` (undefined object, syntax) and `54` (program limit), and driver errors about the data
/// itself (a column that cannot be decoded).
pub(crate) fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d.code().is_some_and(|code| is_transient_sqlstate(&code)),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Whether a SQLSTATE names a transient condition (see [`is_transient_sqlx`]).
pub(crate) fn is_transient_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "40" | "53" | "57" | "58")) || code == "55P03"
}

/// Whether an error is, or was caused by, a transient database error: the error itself or any error in its
/// source chain is a [`sqlx::Error`] that [`is_transient_sqlx`] calls transient.
pub(crate) fn is_transient_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<sqlx::Error>()
            .is_some_and(is_transient_sqlx)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The SQLSTATE of a database error, if it carries one.
pub(crate) fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_class() {
        for transient in [
            "08006", "08P01", "40001", "40P01", "53100", "53300", "57P01", "57014", "55P03",
        ] {
            assert!(is_transient_sqlstate(transient), "{transient}");
        }
        for permanent in [
            "22P05", "22012", "23505", "25P02", "54000", "42P01", "42703", "XX000", "P0001",
        ] {
            assert!(!is_transient_sqlstate(permanent), "{permanent}");
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("the handler's own error")]
    struct Wrapper(#[source] sqlx::Error);

    #[test]
    fn a_transient_cause_is_found_under_the_handlers_own_error() {
        let lost = || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(lost());
        assert!(is_transient_cause(&*boxed));
        let wrapped: Box<dyn std::error::Error + Send + Sync> = Box::new(Wrapper(lost()));
        assert!(is_transient_cause(&*wrapped));
        let decode: Box<dyn std::error::Error + Send + Sync> =
            Box::new(Wrapper(sqlx::Error::RowNotFound));
        assert!(!is_transient_cause(&*decode));
        let plain: Box<dyn std::error::Error + Send + Sync> = "the handler refused".into();
        assert!(!is_transient_cause(&*plain));
    }
}
