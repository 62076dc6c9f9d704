//! The look-ahead pipeline keeps each instance's inputs in order, through failures: an input whose handling ahead
//! of the runner failed is done again by the runner before any later input of its instance runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use annals::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StreamId,
    StreamVersion, async_trait,
};
use annals_memory::MemoryStore;
use annals_process::{Process, ProcessOptions, Timers, default_options};
use annals_projections::Projections;
use tokio::sync::Notify;

use crate::support::*;

/// The memory store, except that the first load of stream `fail` fails (the store unavailable for a moment) and
/// the second one lets other tasks run first (as a network round trip would); the first load of stream `hold`
/// waits until that failure has happened.
struct FlakyLoads {
    inner: MemoryStore,
    fail: StreamId,
    hold: StreamId,
    failed: Notify,
    loads_of_fail: AtomicU32,
    held_once: AtomicBool,
}

#[async_trait]
impl EventStore for FlakyLoads {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> annals::Result<AppendResult> {
        self.inner.append(stream, expected, events).await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from: StreamVersion,
        limit: usize,
    ) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from, limit).await
    }

    async fn read_all(&self, after: Position, limit: usize) -> annals::Result<Vec<RecordedEvent>> {
        self.inner.read_all(after, limit).await
    }

    async fn head(&self) -> annals::Result<Position> {
        self.inner.head().await
    }

    async fn wait_for_events(
        &self,
        after: Position,
        timeout: Duration,
    ) -> annals::Result<Position> {
        self.inner.wait_for_events(after, timeout).await
    }

    async fn load_stream(&self, stream: &StreamId) -> annals::Result<Vec<RecordedEvent>> {
        if *stream == self.fail {
            match self.loads_of_fail.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    self.failed.notify_one();
                    return Err(annals::Error::Unavailable {
                        operation: "load_stream",
                        source: "injected: the store is unavailable for a moment".into(),
                    });
                }
                1 => tokio::task::yield_now().await,
                _ => {}
            }
        }
        if *stream == self.hold && !self.held_once.swap(true, Ordering::SeqCst) {
            self.failed.notified().await;
        }
        self.inner.load_stream(stream).await
    }
}

/// The log: jobs `a`, `b` and `j` requested, then an `Added` for job `j` (its counter already holds it). The runner
/// handles `a`; the pipeline starts `b` and `j` ahead; `j`'s handling fails (its load), and only then does `b`'s
/// finish, so the runner moves on to `b` and the pipeline reads the `Added` for `j` while `j`'s redo is still the
/// runner's to do (and that redo lets other tasks run before it loads). Handled before that redo, the `Added` would
/// find job `j` not started, be ignored, and job `j` would never be done (the pipeline used to forget a failed
/// handling at once, so nothing held the `Added` back).
#[tokio::test]
async fn a_later_input_waits_for_the_redo_of_a_failed_ahead_handling() {
    let memory = MemoryStore::new();
    let flaky = Arc::new(FlakyLoads {
        inner: memory.clone(),
        fail: stream("job-j"),
        hold: stream("job-b"),
        failed: Notify::new(),
        loads_of_fail: AtomicU32::new(0),
        held_once: AtomicBool::new(false),
    });
    let store: Arc<dyn EventStore> = flaky.clone();
    let plain: Arc<dyn EventStore> = Arc::new(memory.clone());
    request(&*plain, "a", "c", 10, None).await;
    request(&*plain, "b", "c", 10, None).await;
    request(&*plain, "j", "z", 5, None).await;
    let added = NewEvent::from_event(&CounterEvent::Added {
        amount: 5,
        job: "j".into(),
    })
    .unwrap();
    plain
        .append(&stream("counter-z"), ExpectedVersion::NoStream, vec![added])
        .await
        .unwrap();

    let counters = Counters::new(Arc::clone(&plain));
    let process = Process::new(Jobs, Arc::clone(&store), counters, Timers::memory())
        .with_options(ProcessOptions::default().read_ahead(2));
    let projections = process.register(Projections::memory(memory.clone()), default_options());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn({
        let projections = projections.clone();
        async move {
            projections
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    eventually("jobs a and b are done", Duration::from_secs(10), || async {
        let mut done = 0;
        for id in ["a", "b"] {
            if process
                .load(id)
                .await
                .unwrap()
                .is_some_and(|j| j.state.status == Status::Done)
            {
                done += 1;
            }
        }
        done == 2
    })
    .await;
    let head = plain.head().await.unwrap();
    projections
        .wait_for_position("jobs", head, Duration::from_secs(10))
        .await
        .unwrap();
    let j = process.load("j").await.unwrap().unwrap();
    assert_eq!(
        j.state.status,
        Status::Done,
        "the Added for job j was handled after the redo of its request"
    );
    assert_eq!(counter_value(&plain, "z").await, 5, "counter z moved once");
    assert!(
        flaky.loads_of_fail.load(Ordering::SeqCst) >= 2 && flaky.held_once.load(Ordering::SeqCst),
        "the injected failure happened"
    );
    let _ = stop.send(());
    runner.await.unwrap().unwrap();
}
