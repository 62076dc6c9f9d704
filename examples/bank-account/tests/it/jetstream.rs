//! A JetStream stream of the test's own on the shared NATS server, deleted when the test ends.

use annals_nats::async_nats;

/// Deletes the test's JetStream stream when dropped.
pub(crate) struct StreamGuard(String);

/// A fresh feed for one test: the guard of its stream, the stream's name and the subject prefix, both derived
/// from `tag` and a new UUID so that tests running at once never share them.
pub(crate) fn fresh_feed(tag: &str) -> (StreamGuard, String, String) {
    let id = uuid::Uuid::now_v7().simple().to_string();
    let unique = &id[id.len() - 10..];
    let stream = format!("{tag}{unique}").to_uppercase();
    let prefix = format!("{tag}{unique}").to_lowercase();
    (StreamGuard(stream.clone()), stream, prefix)
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let name = self.0.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = async_nats::connect(nats_url()).await {
                    let _ = async_nats::jetstream::new(c).delete_stream(&name).await;
                }
            });
        })
        .join();
    }
}

/// The shared NATS server: `NATS_URL`, by default 127.0.0.1:4222 (`scripts/services.sh`).
pub(crate) fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "127.0.0.1:4222".to_owned())
}
