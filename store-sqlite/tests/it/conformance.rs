//! The store conformance suite and the command-id cases, each case on a fresh file.

use crate::support::TempStore;

annals::store_conformance!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn() -> TempStore::new().await
);

mod command_ids {
    use crate::support::TempStore;

    annals::command_id_conformance!(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        fn() -> TempStore::new().await
    );
}
