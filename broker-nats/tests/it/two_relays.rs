//! Two relay processes: only one publishes at a time; SIGKILL of the publishing one hands over within seconds.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use annals_nats::FeedHeaders;
use sqlx::PgPool;

use crate::support::{RelayProcess, TestStream, eventually, pg_store, shared_nats, write_events};

#[sqlx::test(migrations = false)]
async fn two_relays_publish_one_at_a_time_and_a_killed_one_hands_over(pool: PgPool) {
    let store = pg_store(&pool).await;
    let feed = TestStream::new(shared_nats());
    let ttl = ["--lease-ttl-ms", "5000", "--batch-size", "50"];
    let mut first = RelayProcess::spawn(&pool, &feed, "first", &ttl);
    eventually(
        "the first relay to own the feed",
        Duration::from_secs(60),
        || async { first.logged("relay owns the feed") > 0 },
    )
    .await;
    let second = RelayProcess::spawn(&pool, &feed, "second", &ttl);
    let mut total = write_events(&store, "account", 10, 10).await;
    eventually(
        "the first batch of events to arrive",
        Duration::from_secs(60),
        || async { feed.count().await >= total as u64 },
    )
    .await;
    assert!(first.logged("published batch") > 0);
    assert_eq!(
        second.logged("published batch"),
        0,
        "the second relay published while the first owned the feed"
    );

    first.kill();
    let killed = Instant::now();
    total += write_events(&store, "account", 10, 5).await;
    eventually(
        "the second relay to take over",
        Duration::from_secs(30),
        || async { feed.count().await >= total as u64 },
    )
    .await;
    let handover = killed.elapsed();
    // Its log line follows its checkpoint, which follows the broker's acknowledgements.
    eventually(
        "the second relay to checkpoint what it published after the kill",
        Duration::from_secs(30),
        || async { second.logged("published batch") > 0 },
    )
    .await;
    eprintln!(
        "handover after SIGKILL took {handover:?} (lease TTL 5 s: a standby takes over once the lease expired)"
    );

    let messages = feed.messages().await;
    let ids: HashSet<_> = messages
        .iter()
        .map(|m| FeedHeaders::parse(Some(&m.headers)).unwrap().event_id)
        .collect();
    assert_eq!((messages.len(), ids.len()), (total, total));
}
