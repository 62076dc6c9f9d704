//! The memory store passes the store conformance suite.

use annals_memory::MemoryStore;

annals::store_conformance!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn() -> MemoryStore::new()
);

annals::command_id_conformance!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    fn() -> MemoryStore::new()
);
