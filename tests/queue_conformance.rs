//! One conformance suite for every queue backend, run against the real
//! servers. Each backend instantiates `conformance!` with its own setup; an
//! assertion that one backend cannot meet is a bug in that backend, never a
//! reason to weaken the suite.

#[path = "support/postgres.rs"]
mod postgres_support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vidpipe::db::Database;
use vidpipe::domain::{now_ms, JobState};
use vidpipe::queue::{Backoff, EnqueueOptions, FailOutcome, Queue, RedisQueue, SqlQueue};

const BACKOFF: Duration = Duration::from_millis(1000);
const LEASE: Duration = Duration::from_secs(30);

fn opts(priority: i64, max_attempts: u32) -> EnqueueOptions {
    EnqueueOptions { priority, delay: Duration::ZERO, max_attempts }
}

async fn state(q: &dyn Queue, id: &str) -> JobState {
    q.get(id).await.unwrap().expect("job exists").state
}

/// Claims until a job comes back or the deadline passes.
async fn claim_within(q: &dyn Queue, within: Duration) -> Option<vidpipe::queue::Claim> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(c) = q.claim("w", LEASE).await.unwrap() {
            return Some(c);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn state_transitions(q: Arc<dyn Queue>) {
    q.enqueue("a", &opts(0, 3)).await.unwrap();
    assert_eq!(state(&*q, "a").await, JobState::Waiting);
    assert_eq!(q.counts().await.unwrap().waiting, 1);
    let claim = q.claim("w1", LEASE).await.unwrap().expect("claimable");
    assert_eq!((claim.job_id.as_str(), claim.attempt), ("a", 1));
    let job = q.get("a").await.unwrap().unwrap();
    assert_eq!((job.state, job.worker_id.as_deref()), (JobState::Active, Some("w1")));
    assert!(q.heartbeat(&claim, LEASE, 42.0).await.unwrap());
    assert_eq!(q.get("a").await.unwrap().unwrap().progress, 42.0);
    assert!(q.complete(&claim).await.unwrap());
    assert_eq!(state(&*q, "a").await, JobState::Completed);
    assert!(!q.complete(&claim).await.unwrap(), "completing twice is refused");
    assert!(q.claim("w1", LEASE).await.unwrap().is_none());
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.completed, counts.waiting, counts.active), (1, 0, 0));
}

pub async fn retries_back_off_exponentially_then_fail(q: Arc<dyn Queue>) {
    // Five attempts, four delays: base, 2, 4 and 8 x base. With the +-20%
    // jitter, linear backoff (4 x base at most 4.8) cannot reach the fourth's
    // lower bound (6.4).
    q.enqueue("a", &opts(0, 5)).await.unwrap();
    let mut last_delay = 0;
    for attempt in 1..=5u32 {
        let claim = claim_within(&*q, Duration::from_secs(15)).await.expect("claimable again after backoff");
        assert_eq!(claim.attempt, attempt);
        let before = now_ms();
        let outcome = q.fail(&claim, "w", &format!("boom {attempt}"), true).await.unwrap();
        let after = now_ms();
        match outcome {
            FailOutcome::RetryAt(at) => {
                assert!(attempt < 5);
                let delay = at - before;
                let nominal = BACKOFF.as_millis() as i64 * (1 << (attempt - 1));
                // ±20% jitter, measured from somewhere inside the call.
                assert!(
                    at >= after + nominal * 8 / 10 - (after - before) && delay <= nominal * 12 / 10 + (after - before),
                    "attempt {attempt}: delay {delay} ms, nominal {nominal}"
                );
                assert!(delay > last_delay, "delays grow");
                last_delay = delay;
                assert_eq!(state(&*q, "a").await, JobState::Delayed);
                assert!(q.claim("w", LEASE).await.unwrap().is_none(), "not before its time");
            }
            FailOutcome::Failed => assert_eq!(attempt, 5),
            other => panic!("{other:?}"),
        }
    }
    let job = q.get("a").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 5));
    assert_eq!(
        job.errors.iter().map(|e| e.error.as_str()).collect::<Vec<_>>(),
        ["boom 1", "boom 2", "boom 3", "boom 4", "boom 5"]
    );
    assert_eq!(job.last_error.as_deref(), Some("boom 5"));
}

pub async fn permanent_failures_do_not_retry(q: Arc<dyn Queue>) {
    q.enqueue("a", &opts(0, 5)).await.unwrap();
    let claim = q.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(q.fail(&claim, "w", "not a video", false).await.unwrap(), FailOutcome::Failed);
    let job = q.get("a").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));
    assert!(q.retry("a").await.unwrap(), "a failed job can be retried");
    let job = q.get("a").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Waiting, 0));
    assert!(!q.retry("a").await.unwrap(), "only failed or cancelled jobs");
}

pub async fn expired_leases_are_recovered_and_count_an_attempt(q: Arc<dyn Queue>) {
    q.enqueue("a", &opts(0, 2)).await.unwrap();
    let dead = q.claim("dead", Duration::from_millis(1500)).await.unwrap().unwrap();
    assert_eq!(q.reap_expired().await.unwrap(), 0, "lease still valid");
    assert!(q.claim("other", LEASE).await.unwrap().is_none(), "no second claim while the lease is valid");
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.reap_expired().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "expired lease never reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = q.claim("other", LEASE).await.unwrap().expect("claimable after expiry");
    assert_eq!(second.attempt, 2);
    assert!(!q.heartbeat(&dead, LEASE, 10.0).await.unwrap(), "the dead worker's lease is gone");
    assert!(!q.complete(&dead).await.unwrap(), "the dead worker cannot complete");
    assert_eq!(q.fail(&dead, "dead", "late", true).await.unwrap(), FailOutcome::LeaseLost);
    assert!(q.complete(&second).await.unwrap());

    // Out of attempts: an expired lease fails the job instead.
    q.enqueue("b", &opts(0, 1)).await.unwrap();
    let _lost = q.claim("dead", Duration::from_millis(100)).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.reap_expired().await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "expired lease never reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = q.get("b").await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(job.last_error.unwrap().contains("lease"));
}

pub async fn heartbeats_keep_the_lease(q: Arc<dyn Queue>) {
    q.enqueue("a", &opts(0, 3)).await.unwrap();
    let lease = Duration::from_millis(2000);
    let claim = q.claim("w", lease).await.unwrap().unwrap();
    // Renewed every 500 ms for three leases' worth of time.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(q.heartbeat(&claim, lease, 1.0).await.unwrap());
        assert_eq!(q.reap_expired().await.unwrap(), 0);
    }
    assert!(q.claim("w2", lease).await.unwrap().is_none());
}

pub async fn release_hands_back_without_charging_an_attempt(q: Arc<dyn Queue>) {
    q.enqueue("a", &opts(0, 3)).await.unwrap();
    let claim = q.claim("w", LEASE).await.unwrap().unwrap();
    q.release(&claim).await.unwrap();
    let job = q.get("a").await.unwrap().unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Waiting, 0));
    assert_eq!(q.claim("w2", LEASE).await.unwrap().unwrap().attempt, 1);
}

pub async fn cancel_and_pause(q: Arc<dyn Queue>) {
    q.enqueue("waiting", &opts(0, 3)).await.unwrap();
    assert!(q.cancel("waiting").await.unwrap());
    assert_eq!(state(&*q, "waiting").await, JobState::Cancelled);
    assert!(q.claim("w", LEASE).await.unwrap().is_none());

    q.enqueue("active", &opts(0, 3)).await.unwrap();
    let claim = q.claim("w", LEASE).await.unwrap().unwrap();
    assert!(q.cancel("active").await.unwrap());
    assert!(!q.heartbeat(&claim, LEASE, 5.0).await.unwrap(), "the worker learns of the cancel");
    assert!(!q.complete(&claim).await.unwrap());
    assert!(!q.cancel("active").await.unwrap(), "already cancelled");
    assert!(q.retry("active").await.unwrap());

    q.set_paused(true).await.unwrap();
    assert!(q.is_paused().await.unwrap());
    assert!(q.claim("w", LEASE).await.unwrap().is_none(), "paused: nothing is claimed");
    q.set_paused(false).await.unwrap();
    assert!(q.claim("w", LEASE).await.unwrap().is_some());
}

pub async fn priority_then_fifo_and_delays(q: Arc<dyn Queue>) {
    // Equal priorities enqueued in reverse alphabetical order (most within
    // the same millisecond): first in, first out, whatever the ids.
    for (id, priority) in [("j9", 5), ("j8", 0), ("j7", 5), ("j6", 0), ("j5", -1)] {
        q.enqueue(id, &opts(priority, 3)).await.unwrap();
    }
    assert_eq!(q.position("j5").await.unwrap(), Some(0));
    assert_eq!(q.position("j8").await.unwrap(), Some(1));
    assert_eq!(q.position("j7").await.unwrap(), Some(4));
    let mut order = Vec::new();
    while let Some(c) = q.claim("w", LEASE).await.unwrap() {
        order.push(c.job_id);
    }
    assert_eq!(order, ["j5", "j8", "j6", "j9", "j7"]);

    // Many at one priority, as fast as they go: several share a millisecond,
    // and still come out in the order they went in.
    let ids: Vec<String> = (0..60).rev().map(|i| format!("t{i:02}")).collect();
    for id in &ids {
        q.enqueue(id, &opts(1, 3)).await.unwrap();
    }
    let mut order = Vec::new();
    while let Some(c) = q.claim("w", LEASE).await.unwrap() {
        order.push(c.job_id);
    }
    assert_eq!(order, ids, "first in, first out");

    q.enqueue("later", &EnqueueOptions { priority: 0, delay: Duration::from_millis(1500), max_attempts: 3 })
        .await
        .unwrap();
    assert_eq!(state(&*q, "later").await, JobState::Delayed);
    assert!(q.claim("w", LEASE).await.unwrap().is_none());
    let claim = claim_within(&*q, Duration::from_secs(10)).await.expect("claimable once due");
    assert_eq!(claim.job_id, "later");
}

pub async fn no_double_claim_under_concurrency(q: Arc<dyn Queue>) {
    const JOBS: usize = 2000;
    const WORKERS: usize = 8;
    for i in 0..JOBS {
        q.enqueue(&format!("job-{i:05}"), &opts(0, 3)).await.unwrap();
    }
    let completed = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let q = q.clone();
        let completed = completed.clone();
        workers.push(tokio::spawn(async move {
            let name = format!("worker-{w}");
            while let Some(claim) = q.claim(&name, LEASE).await.unwrap() {
                assert!(q.complete(&claim).await.unwrap(), "{} completed by its only holder", claim.job_id);
                completed.lock().unwrap().push(claim.job_id);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let completed = std::mem::take(&mut *completed.lock().unwrap());
    let unique: HashSet<&String> = completed.iter().collect();
    assert_eq!(completed.len(), JOBS, "each job completed exactly once");
    assert_eq!(unique.len(), JOBS);
    assert_eq!(q.counts().await.unwrap().completed, JOBS as u64);
}

pub async fn list_and_clean(q: Arc<dyn Queue>) {
    for id in ["a", "b", "c"] {
        q.enqueue(id, &opts(0, 1)).await.unwrap();
    }
    // Waiting at the most urgent priority: its place in line must never be
    // mistaken for an old finish time.
    q.enqueue("urgent", &opts(-1000, 1)).await.unwrap();
    q.set_paused(true).await.unwrap();
    q.set_paused(false).await.unwrap();
    let urgent = q.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(urgent.job_id, "urgent");
    q.release(&urgent).await.unwrap();
    q.set_paused(true).await.unwrap();
    q.set_paused(false).await.unwrap();
    let mut claims = Vec::new();
    while let Some(c) = q.claim("w", LEASE).await.unwrap() {
        claims.push(c);
    }
    let by_id = |id: &str| claims.iter().find(|c| c.job_id == id).unwrap().clone();
    assert!(q.complete(&by_id("a")).await.unwrap());
    assert_eq!(q.fail(&by_id("b"), "w", "bad", false).await.unwrap(), FailOutcome::Failed);
    // Handed back urgent first: the most recently changed is `c`, but the
    // list follows the claim order.
    for id in ["urgent", "c"] {
        q.release(&by_id(id)).await.unwrap();
    }
    let ids = |jobs: Vec<vidpipe::queue::JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(q.list(JobState::Completed, 10, 0).await.unwrap()), ["a"]);
    assert_eq!(ids(q.list(JobState::Failed, 10, 0).await.unwrap()), ["b"]);
    // Waiting: in the order they will be claimed; the page after the first.
    assert_eq!(ids(q.list(JobState::Waiting, 10, 0).await.unwrap()), ["urgent", "c"]);
    assert_eq!(ids(q.list(JobState::Waiting, 10, 1).await.unwrap()), ["c"], "paging");
    assert_eq!(ids(q.list(JobState::Waiting, 1, 0).await.unwrap()), ["urgent"], "limit");
    // Finished: the most recent first, whatever the ids.
    for id in ["e", "d"] {
        q.enqueue(id, &opts(-2000, 1)).await.unwrap();
    }
    for id in ["e", "d"] {
        let claim = q.claim("w", LEASE).await.unwrap().unwrap();
        assert_eq!(claim.job_id, id);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(q.fail(&claim, "w", "bad", false).await.unwrap(), FailOutcome::Failed);
    }
    assert_eq!(ids(q.list(JobState::Failed, 10, 0).await.unwrap()), ["d", "e", "b"]);
    assert_eq!(ids(q.list(JobState::Failed, 2, 1).await.unwrap()), ["e", "b"]);

    let an_hour_ago = now_ms() - 3_600_000;
    assert!(q.clean(JobState::Completed, an_hour_ago).await.unwrap().is_empty(), "recent jobs stay");
    let soon = now_ms() + 1_000;
    assert_eq!(q.clean(JobState::Completed, soon).await.unwrap(), ["a"]);
    assert!(q.get("a").await.unwrap().is_none());
    let mut cleaned = q.clean(JobState::Failed, soon).await.unwrap();
    cleaned.sort();
    assert_eq!(cleaned, ["b", "d", "e"]);
    let far_future = now_ms() + 10_000_000_000_000_000;
    for state in [JobState::Waiting, JobState::Active, JobState::Delayed] {
        assert!(q.clean(state, far_future).await.unwrap().is_empty(), "unfinished jobs are never cleaned");
    }
    let counts = q.counts().await.unwrap();
    assert_eq!((counts.completed, counts.failed, counts.waiting), (0, 0, 2));
}

/// Keyset pages: newest id first, in one state or all, and a page does not
/// shift when jobs ahead of the cursor change state.
pub async fn pages_by_keyset(q: Arc<dyn Queue>) {
    for id in ["j1", "j2", "j3", "j4", "j5"] {
        q.enqueue(id, &opts(0, 1)).await.unwrap();
    }
    let ids = |jobs: Vec<vidpipe::queue::JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    let first = ids(q.page(None, None, 2).await.unwrap());
    assert_eq!(first, ["j5", "j4"]);
    // The newest two change state between pages: the next page is unmoved.
    let claim = q.claim("w", LEASE).await.unwrap().unwrap();
    assert_eq!(claim.job_id, "j1", "claims follow FIFO, not ids");
    assert!(q.complete(&claim).await.unwrap());
    assert!(q.cancel("j5").await.unwrap());
    assert_eq!(ids(q.page(None, Some("j4"), 2).await.unwrap()), ["j3", "j2"]);
    assert_eq!(ids(q.page(None, Some("j2"), 2).await.unwrap()), ["j1"], "a short last page");
    assert!(q.page(None, Some("j1"), 2).await.unwrap().is_empty());
    // One state, every state ordered the same way.
    assert_eq!(ids(q.page(Some(JobState::Waiting), None, 10).await.unwrap()), ["j4", "j3", "j2"]);
    assert_eq!(ids(q.page(Some(JobState::Waiting), Some("j4"), 1).await.unwrap()), ["j3"]);
    assert_eq!(ids(q.page(Some(JobState::Completed), None, 10).await.unwrap()), ["j1"]);
    assert_eq!(ids(q.page(Some(JobState::Cancelled), None, 10).await.unwrap()), ["j5"]);
    let all = q.page(None, None, 10).await.unwrap();
    assert_eq!(ids(all.clone()), ["j5", "j4", "j3", "j2", "j1"]);
    assert_eq!(all[0].state, JobState::Cancelled, "the record, not just its id");
}

macro_rules! conformance {
    ($backend:ident, $setup:path) => {
        mod $backend {
            conformance!(@tests $setup;
                state_transitions,
                retries_back_off_exponentially_then_fail,
                permanent_failures_do_not_retry,
                expired_leases_are_recovered_and_count_an_attempt,
                heartbeats_keep_the_lease,
                release_hands_back_without_charging_an_attempt,
                cancel_and_pause,
                priority_then_fifo_and_delays,
                list_and_clean,
                pages_by_keyset,
                no_double_claim_under_concurrency
            );
        }
    };
    (@tests $setup:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let Some((queue, _guard)) = $setup().await else { return };
                super::$name(queue).await;
            }
        )*
    };
}

/// SQLite in a fresh file per test.
async fn sqlite() -> Option<(Arc<dyn Queue>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("q.db").display())).await.unwrap();
    Some((Arc::new(SqlQueue::new(db, Backoff { base: BACKOFF })), dir))
}

/// PostgreSQL in a fresh database per test, on the server named by
/// VIDPIPE_TEST_POSTGRES_URL (default: the local one). Unreachable: a
/// failure in CI, a loud skip elsewhere.
async fn postgres() -> Option<(Arc<dyn Queue>, ())> {
    let url = postgres_support::fresh_database().await?;
    let db = Database::connect(&url).await.unwrap();
    Some((Arc::new(SqlQueue::new(db, Backoff { base: BACKOFF })), ()))
}

/// Redis at VIDPIPE_TEST_REDIS_URL (default: the local one), under a key
/// prefix of its own per test.
async fn redis() -> Option<(Arc<dyn Queue>, ())> {
    let url = std::env::var("VIDPIPE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("vidpipe-test-{}", uuid::Uuid::new_v4().simple());
    match RedisQueue::connect(&url, &prefix, Backoff { base: BACKOFF }).await {
        Ok(q) => Some((Arc::new(q), ())),
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: Redis at {url} unreachable ({e}); set VIDPIPE_TEST_REDIS_URL");
            None
        }
        Err(e) => panic!("Redis at {url} unreachable in CI: {e}"),
    }
}

conformance!(sqlite_backend, super::sqlite);
conformance!(redis_backend, super::redis);
conformance!(postgres_backend, super::postgres);
