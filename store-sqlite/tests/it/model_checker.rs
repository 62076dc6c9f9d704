//! The randomized model checker (`annals::testkit::checker`) on SQLite.

use std::sync::Arc;

use annals::testkit::checker::{Checker, Config};

use crate::support::TempStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_checker_sqlite() {
    let config = Config::from_env("model_checker_sqlite").unwrap();
    match Checker::new(Arc::new(TempStore::new().await), config)
        .run()
        .await
    {
        Ok(summary) => eprintln!("{summary}"),
        Err(failure) => panic!("{failure}"),
    }
}
