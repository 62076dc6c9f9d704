//! The memory store passes the randomized model checker (`annals::testkit::checker`).

use std::sync::Arc;

use annals::testkit::checker::{Checker, Config};
use annals_memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn model_checker_memory() {
    let config = Config::from_env("model_checker_memory").unwrap();
    match Checker::new(Arc::new(MemoryStore::new()), config)
        .run()
        .await
    {
        Ok(summary) => eprintln!("{summary}"),
        Err(failure) => panic!("{failure}"),
    }
}
