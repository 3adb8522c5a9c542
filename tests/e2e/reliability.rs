//! Nothing is lost: workers killed mid-transcode, SIGTERM, hung ffmpeg, and
//! a burst of uploads.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// Polls the job until `check` accepts it.
async fn wait_job(
    api: &Api,
    id: &str,
    within: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let job = api.job(id).await;
        if check(&job) {
            return job;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn assert_plays(api: &Api, id: &str) {
    let doc = api.lecture(id).await;
    let master = doc["videoLink"].as_str().expect("videoLink");
    let out = tokio::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "stream=width", "-of", "csv=p=0", master])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!out.stdout.is_empty());
}

/// An `api` and one `worker` process on `data`, and a 30 s 720p upload that
/// the worker is encoding. Returns the API process (kept alive by the
/// caller), its client, the worker, the lecture id and its running job.
async fn api_and_worker_mid_job(
    data: &std::path::Path,
    env: &[(&str, String)],
) -> (Process, Api, Process, String, serde_json::Value) {
    let api_process = Process::start("api", data, env);
    let port = &env.iter().find(|(k, _)| *k == "VIDPIPE_LISTEN").expect("VIDPIPE_LISTEN in env").1;
    let api = Api::new(format!("http://{port}"));
    wait_until_up(&api.client, &api.base).await;
    let worker = Process::start("worker", data, env);
    let clip = clip(data, "long.mp4", "1280x720", "30", 30, true);
    let id = api.upload_ok(&clip).await;
    let job = wait_job(&api, &id, Duration::from_secs(60), "running", |j| {
        j["state"] == "active" && j["progress"].as_f64().unwrap() > 0.0
    })
    .await;
    (api_process, api, worker, id, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_transcode_loses_its_job_to_another_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let lease = 3;
    let env = [("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")), ("VIDPIPE_LEASE", format!("{lease}s"))];
    let (_api, api, mut first, id, job) = api_and_worker_mid_job(data, &env).await;
    assert!(job["worker"].as_str().unwrap().ends_with(&format!(":{}", first.pid())), "{job}");
    let orphan_dir = format!("-{}/", first.pid());
    let encoders = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|p| {
                std::fs::read(p.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&orphan_dir))
                    .unwrap_or(false)
            })
            .count()
    };
    assert!(encoders() > 0, "the worker's ffmpeg runs before the kill");
    let orphan_work_dir = || {
        std::fs::read_dir(data.join("work"))
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().ends_with(&format!("-{}", first.pid())))
            .map(|e| e.path())
    };
    let orphan_work = orphan_work_dir().expect("the worker's work directory exists before the kill");
    first.child.kill().unwrap(); // SIGKILL: no cleanup runs
    first.child.wait().unwrap();
    let killed_at = Instant::now();
    // Its ffmpeg dies with it, at once (PR_SET_PDEATHSIG), not when the
    // encode would have ended on its own.
    eventually("orphan ffmpeg gone", Duration::from_secs(2), || encoders() == 0).await;
    // Only now the second worker starts: its clean-up of dead workers' files
    // must not be what stops the orphan.
    let second = Process::start("worker", data, &env);

    // The lease runs out, the next reap (each poll, 1 s) frees it, the next
    // claim takes it: lease + 4 s, with allowance for this machine.
    let job = wait_job(&api, &id, Duration::from_secs(lease + 4), "taken over", |j| {
        j["state"] == "active" && j["worker"].as_str().unwrap().ends_with(&format!(":{}", second.pid()))
    })
    .await;
    assert_eq!(job["attempts"], 2, "the lost attempt counts: {job}");
    eprintln!("taken over {:?} after kill -9", killed_at.elapsed());

    // The second worker, on the same host, swept the dead one's work files.
    assert!(!orphan_work.exists(), "{} is left behind", orphan_work.display());
    api.wait_for(&id, "completed", Duration::from_secs(180)).await;
    assert_plays(&api, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_transcode_exits_within_grace_and_the_job_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let grace = 2;
    let env = [("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")), ("VIDPIPE_SHUTDOWN_GRACE", format!("{grace}s"))];
    let mut server = Process::start("serve", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let clip = clip(data, "long.mp4", "1280x720", "30", 30, true);
    let id = api.upload_ok(&clip).await;
    wait_job(&api, &id, Duration::from_secs(60), "running", |j| {
        j["state"] == "active" && j["progress"].as_f64().unwrap() > 0.0
    })
    .await;

    server.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            // The grace period, and 2 s for the hand-back and exit.
            signalled.elapsed() < Duration::from_secs(grace + 2),
            "still running {:?} after SIGTERM",
            signalled.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    eprintln!("exited {:?} after SIGTERM (grace {grace}s)", signalled.elapsed());

    let _restarted = Process::start("serve", data, &env);
    wait_until_up(&api.client, &api.base).await;
    let doc = api.wait_for(&id, "completed", Duration::from_secs(180)).await;
    assert_eq!(doc["attempts"], 1, "handing back on shutdown charges no attempt: {doc}");
    assert_plays(&api, &id).await;
}

/// A stall is the input's fault (a source that stops delivering data):
/// another attempt on the same bytes would hang the same way, so the job
/// fails at once even with attempts to spare. The fake ffmpeg encodes for
/// real (so segments get published), then keeps printing one constant
/// progress line: only advancing output time counts as progress.
#[tokio::test]
async fn a_hung_ffmpeg_is_killed_by_the_stall_watchdog_and_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let fake = ffmpeg_replacing_the_encode(
        dir.path(),
        "ffmpeg \"$@\"; while :; do echo out_time_us=1000000; echo progress=continue; sleep 0.2; done",
    );
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = fake.clone();
        c.stall_timeout = Duration::from_secs(2);
        c.attempts = 3;
        c.backoff = Duration::from_millis(100);
    })
    .await;
    let clip = clip(dir.path(), "ok.mp4", "320x240", "30", 2, false);
    let id = app.upload_ok(&clip).await;
    let media = app.data_dir.path().join("media").join(&id);
    eventually("segments published before the hang", Duration::from_secs(30), || {
        files_under(&media).iter().any(|f| f.extension().is_some_and(|e| e == "m4s"))
    })
    .await;
    let doc = app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    assert!(doc["processingError"].as_str().unwrap().contains("stalled"), "{doc}");
    assert_eq!(doc["videoLink"], serde_json::Value::Null, "the early link is withdrawn");
    // Long enough for two retries at this backoff, had there been any.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = app.job(&id).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("failed"), Some(1)), "not retried: {job}");
    assert_eq!(job["errors"].as_array().unwrap().len(), 1, "{job}");
    eventually("what the failed job published is removed", Duration::from_secs(5), || files_under(&media).is_empty())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_uploads_all_complete_once() {
    let app = spawn_app_with(|c| {
        c.concurrency = 2;
        c.ladder = "240".parse().unwrap();
        // All of them at once, past the default cap of uploads in flight.
        c.limits.max_concurrent_uploads = 100;
        c.limits.max_concurrent_probes = 4;
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "small.mp4", "160x120", "15", 1, false);
    let uploads = (0..100).map(|i| {
        let api = Api::new(app.base.clone());
        let clip = clip.clone();
        async move {
            let response = api.upload_file(&clip, "burst", &format!("topic {i}")).await;
            assert_eq!(response.status(), 202);
            let body: serde_json::Value = response.json().await.unwrap();
            body["lectureId"].as_str().unwrap().to_string()
        }
    });
    let ids = futures::future::join_all(uploads).await;
    let unique: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 100, "every upload got its own lecture");

    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let health: serde_json::Value =
            app.client.get(format!("{}/api/health/queue", app.base)).send().await.unwrap().json().await.unwrap();
        if health["queue"]["completed"] == 100 {
            break;
        }
        assert_eq!(health["queue"]["failed"], 0, "{health}");
        assert!(Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for id in &ids {
        let doc = app.lecture(id).await;
        assert_eq!(doc["processingStatus"], "completed");
        assert_eq!(doc["attempts"], 1, "run exactly once: {doc}");
    }
    let list: serde_json::Value = app
        .client
        .get(format!("{}/api/lectures?courseId=burst&limit=100", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["total"], 100);
}

/// `vidpipe api` and `vidpipe worker` as separate processes on PostgreSQL:
/// the idle worker is woken by NOTIFY, not by its (here, one-minute) poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_worker_processes_share_postgres_and_workers_wake_on_notify() {
    let Some(database_url) = postgres_database().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let env = [
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("DATABASE_URL", database_url),
        ("VIDPIPE_POLL_INTERVAL", "60s".to_string()),
    ];
    let _api = Process::start("api", data, &env);
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    wait_until_up(&api.client, &api.base).await;
    let worker = Process::start("worker", data, &env);
    let clip = clip(data, "short.mp4", "320x240", "30", 2, true);
    // The first job may be found by the worker's start-up poll; after it,
    // the worker sleeps for a minute unless notified.
    let first = api.upload_ok(&clip).await;
    api.wait_for(&first, "completed", Duration::from_secs(120)).await;
    let id = api.upload_ok(&clip).await;
    let uploaded = Instant::now();
    let job = wait_job(&api, &id, Duration::from_secs(5), "woken by NOTIFY", |j| j["state"] != "waiting").await;
    eprintln!("claimed {:?} after upload", uploaded.elapsed());
    assert!(
        job["worker"].as_str().unwrap_or_default().ends_with(&format!(":{}", worker.pid()))
            || job["state"] == "completed",
        "{job}"
    );
    api.wait_for(&id, "completed", Duration::from_secs(120)).await;
    assert_plays(&api, &id).await;
}

/// Redis loses every key. Lectures stay in SQL, and the reconciler
/// re-enqueues every unfinished one; finished ones keep their outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_that_loses_its_data_strands_nothing() {
    let Some(mut redis) = RedisServer::start() else { return };
    let url = redis.url();
    let app = spawn_app_with(|c| {
        c.queue_url = Some(url);
        c.reconcile_interval = Duration::from_secs(1);
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let clip = clip(dir.path(), "short.mp4", "320x240", "30", 2, true);
    let done = app.upload_ok(&clip).await;
    let before = app.wait_for(&done, "completed", Duration::from_secs(120)).await;
    assert_eq!(app.client.get(format!("{}/api/jobs/{done}", app.base)).send().await.unwrap().status(), 200);

    let pause = app.client.post(format!("{}/api/queue/pause", app.base)).send().await.unwrap();
    assert_eq!(pause.status(), 200);
    let mut pending = Vec::new();
    for _ in 0..3 {
        pending.push(app.upload_ok(&clip).await);
    }
    for id in &pending {
        assert_eq!(app.lecture(id).await["processingStatus"], "pending");
    }

    redis.restart();
    for id in &pending {
        app.wait_for(id, "completed", Duration::from_secs(120)).await;
    }
    let doc = app.lecture(&done).await;
    assert_eq!(doc["processingStatus"], "completed", "a finished lecture keeps its outcome: {doc}");
    assert_eq!(doc["videoLink"], before["videoLink"], "and the same video");
    // Its job went with Redis's data and is not brought back (the lecture is
    // finished): several reconciler rounds later, still none.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let job = app.client.get(format!("{}/api/jobs/{done}", app.base)).send().await.unwrap();
        assert_eq!(job.status(), 404, "no job reappears for a finished lecture");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A worker dies on the job's last attempt. The lease reaper fails the job,
/// and the reconciler copies the failure onto the lecture, so the lecture
/// stays failed, with its reason, once the job record is gone (lost with a
/// Redis queue) instead of being enqueued and run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_failed_by_the_lease_reaper_stays_failed_without_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let port = free_port();
    let env = [
        ("VIDPIPE_LISTEN", format!("127.0.0.1:{port}")),
        ("VIDPIPE_LEASE", "2s".to_string()),
        ("VIDPIPE_ATTEMPTS", "1".to_string()),
        ("VIDPIPE_RECONCILE_INTERVAL", "1s".to_string()),
    ];
    let (_api, api, mut first, id, _) = api_and_worker_mid_job(data, &env).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let _second = Process::start("worker", data, &env);
    let job = wait_job(&api, &id, Duration::from_secs(20), "failed by the reaper", |j| j["state"] == "failed").await;
    let reason = job["lastError"].as_str().unwrap().to_string();
    assert!(reason.contains("lease"), "{job}");

    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}", data.join("vidpipe.db").display())).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recorded: Option<String> = sqlx::query_scalar("SELECT failed_error FROM lectures WHERE id = ?")
            .bind(&id)
            .fetch_one(&db)
            .await
            .unwrap();
        if let Some(recorded) = recorded {
            assert_eq!(recorded, reason, "the lecture keeps the job's reason");
            break;
        }
        assert!(Instant::now() < deadline, "the reconciler did not record the failure on the lecture");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The job record goes, as with a Redis queue that lost its data.
    let jobs = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE id = ?").bind(&id).fetch_one(&db).await.unwrap()
    };
    assert_eq!(jobs().await, 1, "the job record existed");
    sqlx::query("DELETE FROM jobs WHERE id = ?").bind(&id).execute(&db).await.unwrap();
    // Four reconciler intervals: had it taken the lecture for unfinished, it
    // would have enqueued it again by now.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let doc = api.lecture(&id).await;
        assert_eq!(doc["processingStatus"], "failed", "{doc}");
        assert_eq!(doc["processingError"].as_str(), Some(reason.as_str()), "{doc}");
        assert_eq!(jobs().await, 0, "no job came back");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `vidpipe api` and two `vidpipe worker`s started at the same moment on a
/// new SQLite database all start: they migrate it at once, and the ones
/// that lose a race for a migration try again instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_started_together_on_a_new_sqlite_database_all_start() {
    for _ in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let env = [("VIDPIPE_LISTEN", format!("127.0.0.1:{port}"))];
        let mut processes = [
            Process::start("api", dir.path(), &env),
            Process::start("worker", dir.path(), &env),
            Process::start("worker", dir.path(), &env),
        ];
        let api = Api::new(format!("http://127.0.0.1:{port}"));
        wait_until_up(&api.client, &api.base).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for p in processes.iter_mut() {
                if let Some(status) = p.child.try_wait().unwrap() {
                    let logs: String = std::fs::read_dir(dir.path())
                        .unwrap()
                        .flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
                        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                        .collect();
                    panic!("a process exited at start ({status}): {logs}");
                }
            }
            let health: serde_json::Value =
                api.client.get(format!("{}/api/health/queue", api.base)).send().await.unwrap().json().await.unwrap();
            if health["worker"]["live"] == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "both workers never announced themselves: {health}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
