//! Durable timers: they fire after a restart, once in effect, never once cancelled; PostgreSQL pollers claim
//! disjoint timers.

use std::sync::Arc;
use std::time::Duration;

use annals::{EventStore, Repository};
use annals_memory::MemoryStore;
use annals_process::{Process, ProcessOptions, Timers};
use chrono::Utc;

use crate::support::*;

macro_rules! on_both_stores {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let store = MemoryStore::new();
                $body(Arc::new(store), Timers::memory()).await;
            }

            #[sqlx::test(migrations = false)]
            async fn postgres(pool: sqlx::PgPool) {
                let store = pg_store(pool).await;
                let timers = Timers::postgres(&store);
                $body(Arc::new(store), timers).await;
            }

            #[tokio::test]
            async fn sqlite() {
                let scratch = Scratch::new();
                let store = scratch.store().await;
                let timers = Timers::sqlite(&store);
                $body(Arc::new(store.clone()), timers).await;
                store.close().await;
            }
        }
    };
}

on_both_stores!(
    a_timer_fires_after_a_restart_once_in_effect,
    fires_after_restart
);
on_both_stores!(a_cancelled_timer_never_fires, cancelled_never_fires);
on_both_stores!(a_failing_timer_is_retried_then_parked, failing_timer_parks);
on_both_stores!(a_parked_timer_fires_once_retried, parked_timer_retried);
on_both_stores!(
    a_cancelled_timer_stays_cancelled_when_its_input_is_handled_again,
    cancelled_stays_cancelled
);
on_both_stores!(
    a_second_wake_up_with_the_same_key_and_due_time_fires,
    second_wake_up_fires
);

fn process(store: &Arc<dyn EventStore>, timers: &Timers) -> (Process<Jobs>, Counters) {
    let counters = Counters::new(Arc::clone(store));
    let process = Process::new(Jobs, Arc::clone(store), counters.clone(), timers.clone())
        .with_options(ProcessOptions::new().timer_poll(Duration::from_millis(20)));
    (process, counters)
}

async fn fires_after_restart(store: Arc<dyn EventStore>, timers: Timers) {
    let at = Utc::now() + chrono::Duration::seconds(2);
    let requested = request(&*store, "t1", "x", 5, Some(at)).await;
    {
        // The first process sets the timer and stops ("restarts") before it is due.
        let (first, _) = process(&store, &timers);
        first.handle_event(&requested).await.unwrap();
        assert_eq!(first.fire_due_timers().await.unwrap(), 0, "not due yet");
    }
    let (second, counters) = process(&store, &timers);
    // Handling the request again (a replay after the restart) sets the same timer, not a second one.
    second.handle_event(&requested).await.unwrap();
    // The first firing "crashes" right after its command took effect: the timer is given back and fired again.
    counters
        .fail_after
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn({
        let second = second.clone();
        async move {
            second
                .run_timers(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    eventually(
        "the timer fired and was completed",
        Duration::from_secs(10),
        || async {
            counters.sends().len() == 2
                && second
                    .load("t1")
                    .await
                    .unwrap()
                    .is_some_and(|j| j.state.status == Status::Started)
        },
    )
    .await;
    assert!(Utc::now() >= at, "it fired at its time, not before");
    let _ = stop.send(());
    poller.await.unwrap().unwrap();
    assert_eq!(
        second.fire_due_timers().await.unwrap(),
        0,
        "completed: nothing left to fire"
    );

    assert_eq!(counter_value(&store, "x").await, 5);
    assert_eq!(
        counters.sends().len(),
        2,
        "sent twice (a retried firing), under one command id"
    );
    assert_eq!(counters.sends()[0].1, counters.sends()[1].1);
    let job = second.load("t1").await.unwrap().unwrap();
    assert_eq!(job.version.get(), 2, "requested, started");
}

async fn cancelled_never_fires(store: Arc<dyn EventStore>, timers: Timers) {
    let (process, counters) = process(&store, &timers);
    let at = Utc::now() + chrono::Duration::milliseconds(200);
    let requested = request(&*store, "t2", "y", 5, Some(at)).await;
    process.handle_event(&requested).await.unwrap();

    // Cancelled through the job's own command, then the process sees the cancellation.
    let jobs = Repository::<Job, _>::new(Arc::clone(&store));
    let cancelled = jobs
        .execute(&stream("job-t2"), &JobCommand::Cancel)
        .await
        .unwrap();
    let event = store.load_stream(&stream("job-t2")).await.unwrap();
    process.handle_event(event.last().unwrap()).await.unwrap();
    assert_eq!(cancelled.state.status, Status::Cancelled);

    // Past its time, nothing is due and nothing fires.
    eventually("its time has passed", Duration::from_secs(5), || async {
        Utc::now() > at + chrono::Duration::milliseconds(50)
    })
    .await;
    assert_eq!(process.fire_due_timers().await.unwrap(), 0);
    assert!(counters.sends().is_empty());
    assert_eq!(counter_value(&store, "y").await, 0);
    assert_eq!(
        process.load("t2").await.unwrap().unwrap().state.status,
        Status::Cancelled
    );
}

async fn failing_timer_parks(store: Arc<dyn EventStore>, timers: Timers) {
    let counters = Counters::new(Arc::clone(&store));
    // Every send fails: the timer's handling fails every time.
    counters
        .fail_after
        .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers.clone())
        .with_options(
            ProcessOptions::new()
                .timer_attempts(3)
                .timer_poll(Duration::from_millis(5)),
        );
    let requested = request(&*store, "t3", "z", 5, Some(Utc::now())).await;
    process.handle_event(&requested).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let poller = tokio::spawn({
        let process = process.clone();
        async move {
            process
                .run_timers(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    eventually(
        "the timer was tried three times",
        Duration::from_secs(20),
        || async { counters.sends().len() >= 3 },
    )
    .await;
    let _ = stop.send(());
    poller.await.unwrap().unwrap();
    assert_eq!(counters.sends().len(), 3, "then parked: no fourth try");
    assert_eq!(process.fire_due_timers().await.unwrap(), 0);
    // The effect happened once (the sender fails after executing), however often it was retried.
    assert_eq!(counter_value(&store, "z").await, 5);
}

#[sqlx::test(migrations = false)]
async fn postgres_pollers_claim_disjoint_timers(pool: sqlx::PgPool) {
    let store: Arc<dyn EventStore> = Arc::new(pg_store(pool.clone()).await);
    let pg = annals_postgres::PostgresStore::from_pool(pool);
    let timers = Timers::postgres(&pg);
    let (process, counters) = process(&store, &timers);
    for n in 0..40 {
        let requested = request(
            &*store,
            &format!("p{n}"),
            &format!("q{n}"),
            1,
            Some(Utc::now()),
        )
        .await;
        process.handle_event(&requested).await.unwrap();
    }
    // Four pollers (as four processes would) fire concurrently.
    let mut pollers = Vec::new();
    for _ in 0..4 {
        let (p, _) = self::process(&store, &timers);
        pollers.push(tokio::spawn(async move {
            let mut fired = 0;
            loop {
                let n = p.fire_due_timers().await.unwrap();
                if n == 0 {
                    return fired;
                }
                fired += n;
            }
        }));
    }
    let mut total = 0;
    for p in pollers {
        total += p.await.unwrap();
    }
    assert_eq!(total, 40, "each timer fired by exactly one poller");
    let _ = counters;
    for n in 0..40 {
        assert_eq!(counter_value(&store, &format!("q{n}")).await, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_pollers_on_one_file_claim_disjoint_timers() {
    let scratch = Scratch::new();
    let file = scratch.store().await;
    let store: Arc<dyn EventStore> = Arc::new(file.clone());
    let (process, _) = process(&store, &Timers::sqlite(&file));
    for n in 0..40 {
        let requested = request(
            &*store,
            &format!("p{n}"),
            &format!("q{n}"),
            1,
            Some(Utc::now()),
        )
        .await;
        process.handle_event(&requested).await.unwrap();
    }
    // Four pollers, each on a connection of its own to the file (as four processes would), fire concurrently.
    let mut pollers = Vec::new();
    for _ in 0..4 {
        let own = scratch.store().await;
        let (p, _) = self::process(&store, &Timers::sqlite(&own));
        pollers.push(tokio::spawn(async move {
            let mut fired = 0;
            loop {
                let n = p.fire_due_timers().await.unwrap();
                if n == 0 {
                    own.close().await;
                    return fired;
                }
                fired += n;
            }
        }));
    }
    let mut total = 0;
    for p in pollers {
        total += p.await.unwrap();
    }
    assert_eq!(total, 40, "each timer fired by exactly one poller");
    for n in 0..40 {
        assert_eq!(counter_value(&store, &format!("q{n}")).await, 1);
    }
    file.close().await;
}

/// Counts the `JobStarted` events of job `id`.
async fn starts(store: &Arc<dyn EventStore>, id: &str) -> usize {
    store
        .load_stream(&stream(&format!("job-{id}")))
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "JobStarted")
        .count()
}

async fn second_wake_up_fires(store: Arc<dyn EventStore>, timers: Timers) {
    let (process, _) = process(&store, &timers);
    let at = Utc::now() - chrono::Duration::seconds(1);
    let first = request(&*store, "w1", "w", 1, Some(at)).await;
    process.handle_event(&first).await.unwrap();
    assert_eq!(process.fire_due_timers().await.unwrap(), 1);
    assert_eq!(starts(&store, "w1").await, 1);

    // The job is requested again with the same due time: the same key and due time, a new wake-up.
    Repository::<Job, _>::new(Arc::clone(&store))
        .execute(
            &stream("job-w1"),
            &JobCommand::Request {
                counter: "w".into(),
                amount: 1,
                at: Some(at),
            },
        )
        .await
        .unwrap();
    let again = store.load_stream(&stream("job-w1")).await.unwrap();
    process.handle_event(again.last().unwrap()).await.unwrap();
    assert_eq!(process.fire_due_timers().await.unwrap(), 1);
    assert_eq!(
        starts(&store, "w1").await,
        2,
        "the second wake-up was handled, not taken for the first one handled again"
    );
}

async fn parked_timer_retried(store: Arc<dyn EventStore>, timers: Timers) {
    let counters = Counters::new(Arc::clone(&store));
    counters
        .fail_after
        .store(u32::MAX, std::sync::atomic::Ordering::SeqCst);
    let process = Process::new(Jobs, Arc::clone(&store), counters.clone(), timers.clone())
        .with_options(
            ProcessOptions::new()
                .timer_attempts(2)
                .timer_poll(Duration::from_millis(5)),
        );
    let requested = request(&*store, "t5", "v", 5, Some(Utc::now())).await;
    process.handle_event(&requested).await.unwrap();
    eventually(
        "the timer was tried twice",
        Duration::from_secs(20),
        || async {
            let _ = process.fire_due_timers().await.unwrap();
            counters.sends().len() >= 2
        },
    )
    .await;
    assert_eq!(process.fire_due_timers().await.unwrap(), 0, "parked");

    // The cause is fixed; the operator retries the parked timers, and the timer fires.
    counters
        .fail_after
        .store(0, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(process.retry_parked_timers().await.unwrap(), 1);
    eventually(
        "the parked timer fired after the fix",
        Duration::from_secs(10),
        || async { process.fire_due_timers().await.unwrap() == 1 },
    )
    .await;
    assert_eq!(counter_value(&store, "v").await, 5, "once in effect");
    assert_eq!(counters.sends().len(), 3);
    assert_eq!(process.retry_parked_timers().await.unwrap(), 0, "none left");
}

/// Sequential scans of `process_timers` so far, once the polling connection's statistics are flushed.
async fn timer_table_scans(poller: &sqlx::PgPool, reader: &sqlx::PgPool, schema: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(poller)
        .await
        .unwrap();
    // The next statement on the (only) polling connection starts after it went idle and flushed.
    sqlx::query("SELECT 1").execute(poller).await.unwrap();
    sqlx::query("SELECT pg_stat_clear_snapshot()")
        .execute(reader)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT seq_scan FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'process_timers'",
    )
    .bind(schema)
    .fetch_one(reader)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn postgres_the_due_timer_poll_reads_through_an_index(pool: sqlx::PgPool) {
    let store = pg_store(pool.clone()).await;
    let schema = store.schema().to_owned();
    // 5,000 timers of this process, none due for an hour, and statistics that know it.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".process_timers (process, instance, timer_key, fire_id, due_at, payload) \
         SELECT 'jobs', 'i' || g, 'start', gen_random_uuid(), now() + interval '1 hour' + g * interval '1 s', \
                '\"Start\"' FROM generate_series(1, 5000) AS g"
    )))
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ANALYZE \"{schema}\".process_timers"
    )))
    .execute(&pool)
    .await
    .unwrap();
    // The poller on a connection of its own, so its statistics can be flushed on demand.
    let poller = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let polling_store = annals_postgres::PostgresStore::from_pool(poller.clone());
    let store: Arc<dyn EventStore> = Arc::new(store);
    let (process, _) = process(&store, &Timers::postgres(&polling_store));

    let before = timer_table_scans(&poller, &pool, &schema).await;
    for _ in 0..3 {
        // One poll: claim the due timers, then find when the next one is due.
        process.run_timers(async {}).await.unwrap();
    }
    let after = timer_table_scans(&poller, &pool, &schema).await;
    assert_eq!(
        after - before,
        0,
        "the due-timer poll read the 5,000-timer table sequentially"
    );
    poller.close().await;
}

async fn cancelled_stays_cancelled(store: Arc<dyn EventStore>, timers: Timers) {
    let (process, counters) = process(&store, &timers);
    let requested = request(&*store, "t6", "u", 5, Some(Utc::now())).await;
    process.handle_event(&requested).await.unwrap();
    Repository::<Job, _>::new(Arc::clone(&store))
        .execute(&stream("job-t6"), &JobCommand::Cancel)
        .await
        .unwrap();
    let cancelled = store.load_stream(&stream("job-t6")).await.unwrap();
    process
        .handle_event(cancelled.last().unwrap())
        .await
        .unwrap();

    // The request comes again (a runner that crashed before its checkpoint). Its decision recorded no event, so
    // it is decided on the current state (cancelled), which schedules nothing: the cancellation holds. (A decision
    // that schedules a timer *and* appends events is decided again on the state before them and schedules the
    // timer again: the documented caveat of docs/process-managers.md, "Timers and inputs handled again".)
    process.handle_event(&requested).await.unwrap();
    assert_eq!(
        process.fire_due_timers().await.unwrap(),
        0,
        "the cancelled timer came back and fired"
    );
    assert!(counters.sends().is_empty());
}
