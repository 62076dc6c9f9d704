//! Which database failures are transient (retrying the same work later may succeed) and which are permanent:
//! the rules of `annals-projections` ([`is_transient_sqlx`]), applied here to a handler's error and its causes.

#[cfg(test)]
use annals_projections::is_transient_sqlstate;
pub(crate) use annals_projections::is_transient_sqlx;

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
