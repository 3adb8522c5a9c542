//! Operator commands: `vidpipe queue ...`, `vidpipe lectures ...` and
//! `vidpipe doctor`. They replace the seed system's scripts (queue status,
//! processing status, delete failed/stuck lectures, clean failed jobs, system
//! test), print a table for people or JSON with `--json`, and act through the
//! same stores as the server, so they follow the same rules.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{
    Config, DatabaseArgs, KeysAction, LecturesAction, LecturesArgs, QueueAction, QueueArgs, ServiceArgs, WebhooksAction,
};
use crate::db::Database;
use crate::domain::{now_ms, rfc3339, LectureId};
use crate::events::{webhooks, EventLog};
use crate::housekeeping::{clean_jobs, Cleaned};
use crate::keys::ApiKeys;
use crate::lectures::{JobChange, RetriedFailed};
use crate::queue::{Backoff, JobRecord, Queue};
use crate::startup::{self, Backends, StorageCheck};
use crate::status::{Audience, JobView, LectureDocument};
use crate::tools::Tools;

/// How an operator command failed, as its exit code says: 1 it failed, 3
/// what it names does not exist (2 is a usage error, from clap), so scripts
/// can tell "nothing to do" from "something is wrong".
#[derive(Debug)]
pub enum CommandError {
    Failed(String),
    NotFound(String),
}

impl CommandError {
    pub const NOT_FOUND_EXIT_CODE: u8 = 3;

    pub fn exit_code(&self) -> u8 {
        match self {
            CommandError::Failed(_) => 1,
            CommandError::NotFound(_) => Self::NOT_FOUND_EXIT_CODE,
        }
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Failed(m) | CommandError::NotFound(m) => f.write_str(m),
        }
    }
}

impl From<String> for CommandError {
    fn from(message: String) -> Self {
        CommandError::Failed(message)
    }
}

/// Prints rows under headers, columns aligned by display width (CJK topics
/// take two columns a character), every cell cut to one line: a table is for
/// reading at a glance; `--json` has every text whole.
fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    print_rows(headers, rows, one_line_text)
}

/// [`print_table`] with each cell shaped by `cell`.
fn print_rows(headers: &[&str], rows: &[Vec<String>], cell: fn(&str) -> String) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING).set_content_arrangement(comfy_table::ContentArrangement::Disabled);
    table.set_header(headers.iter().map(comfy_table::Cell::new));
    for row in rows {
        table.add_row(row.iter().map(|text| cell(text)));
    }
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
}

fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON prints"));
}

fn job_row(job: &JobRecord) -> Vec<String> {
    vec![
        job.id.clone(),
        job.state.to_string(),
        format!("{}/{}", job.attempts, job.max_attempts),
        format!("{:.0}%", job.progress),
        job.worker_id.clone().unwrap_or_default(),
        rfc3339(job.updated_at),
        job.last_error.clone().unwrap_or_default(),
    ]
}

const JOB_HEADERS: [&str; 7] = ["ID", "STATE", "ATTEMPTS", "PROGRESS", "WORKER", "UPDATED", "LAST ERROR"];

/// The API's job shape, with nothing redacted: operators see everything.
fn job_json(job: &JobRecord) -> Value {
    serde_json::to_value(JobView::new(job, Audience::Operator)).expect("a job serializes")
}

/// The service's database and queue; neither is created if missing.
async fn connect(args: &QueueArgs) -> Result<Backends, String> {
    let url = args.database.existing_url().map_err(|e| e.to_string())?;
    Backends::open(&url, args.queue_url.as_deref(), Backoff { base: Duration::from_secs(5) })
        .await
        .map_err(|e| e.to_string())
}

/// Whether a command may make the database: only `keys create` does, as the
/// first step of a new deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Existing,
    CreateIfMissing,
}

async fn database(args: &DatabaseArgs, open: Open) -> Result<Database, String> {
    let url = match open {
        Open::Existing => args.existing_url(),
        Open::CreateIfMissing => {
            if args.database_url.is_none() {
                std::fs::create_dir_all(&args.data_dir).map_err(|e| {
                    format!(
                        "cannot create data directory {} ({e}); set --data-dir / VIDPIPE_DATA_DIR",
                        args.data_dir.display()
                    )
                })?;
            }
            args.url()
        }
    }
    .map_err(|e| e.to_string())?;
    Database::connect(&url).await.map_err(|e| format!("cannot open the database ({e}); check DATABASE_URL"))
}

/// `vidpipe webhooks list|retry`.
pub async fn webhooks_command(action: WebhooksAction, json_out: bool, args: DatabaseArgs) -> Result<(), CommandError> {
    let log = EventLog::new(database(&args, Open::Existing).await?);
    match action {
        WebhooksAction::List { state, limit } => {
            let deliveries = webhooks::list(&log, state.as_deref(), limit).await.map_err(|e| e.to_string())?;
            if json_out {
                print_json(&serde_json::to_value(&deliveries).expect("deliveries serialize"));
            } else {
                let rows: Vec<Vec<String>> = deliveries
                    .into_iter()
                    .map(|d| {
                        let error = d.last_error.unwrap_or_default();
                        vec![d.id, d.kind, d.state, d.attempts.to_string(), d.url, d.next_attempt_at, error]
                    })
                    .collect();
                print_table(&["ID", "EVENT", "STATE", "ATTEMPTS", "URL", "NEXT ATTEMPT", "LAST ERROR"], &rows);
            }
        }
        WebhooksAction::Retry { id, all_dead: _ } => {
            let n = webhooks::retry(&log, id.as_deref()).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err(match id {
                    Some(id) => CommandError::NotFound(format!(
                        "{id}: no dead delivery with this id; `vidpipe webhooks list --state dead`"
                    )),
                    None => CommandError::NotFound("no dead deliveries".to_string()),
                });
            }
            if json_out {
                print_json(&json!({ "requeued": n }));
            } else {
                println!("{n} deliver{} queued again", if n == 1 { "y" } else { "ies" });
            }
        }
    }
    Ok(())
}

/// `vidpipe keys create|list|revoke`: straight to the database, so it works
/// with no API running and no key in hand.
pub async fn keys_command(action: KeysAction, json_out: bool, args: DatabaseArgs) -> Result<(), CommandError> {
    let open = if matches!(action, KeysAction::Create { .. }) { Open::CreateIfMissing } else { Open::Existing };
    let keys = ApiKeys::new(database(&args, open).await?);
    match action {
        KeysAction::Create { name, scope } => {
            let secret = keys.create(&name, scope).await.map_err(|e| e.to_string())?;
            if json_out {
                print_json(&json!({ "name": name.as_str(), "scope": scope.as_str(), "secret": secret }));
            } else {
                println!("{secret}");
                eprintln!(
                    "created `{name}` ({scope}). This is the only time the secret is shown: store it now. \
                     Clients send it as `Authorization: Bearer <secret>`."
                );
            }
        }
        KeysAction::List => {
            let list = keys.list().await.map_err(|e| e.to_string())?;
            if json_out {
                print_json(&serde_json::to_value(&list).expect("keys serialize"));
            } else {
                let rows: Vec<Vec<String>> = list
                    .into_iter()
                    .map(|k| vec![k.name, k.scope, k.created_at, k.last_used_at.unwrap_or_else(|| "never".into())])
                    .collect();
                print_table(&["NAME", "SCOPE", "CREATED", "LAST USED"], &rows);
            }
        }
        KeysAction::Revoke { name } => {
            if !keys.revoke(&name).await.map_err(|e| e.to_string())? {
                return Err(CommandError::NotFound(format!("no key named `{name}`; `vidpipe keys list` shows them")));
            }
            report(json_out, "revoked", &[name.to_string()]);
        }
    }
    Ok(())
}

pub async fn queue_command(action: QueueAction, json_out: bool, args: QueueArgs) -> Result<(), CommandError> {
    let Backends { db, queue, lectures } = connect(&args).await?;
    let q = queue.as_ref();
    let err = |e: crate::queue::QueueError| e.to_string();
    match action {
        QueueAction::Status => {
            let counts = q.counts().await.map_err(err)?;
            let paused = q.is_paused().await.map_err(err)?;
            let alerts = crate::alerts::states(&db).await.map_err(|e| e.to_string())?;
            let firing: Vec<_> = alerts.into_iter().filter(|a| a.firing).collect();
            if json_out {
                print_json(&json!({ "paused": paused, "counts": counts, "alerts": firing }));
            } else {
                let c = &counts;
                let rows: Vec<Vec<String>> = [
                    ("waiting", c.waiting),
                    ("active", c.active),
                    ("delayed", c.delayed),
                    ("completed", c.completed),
                    ("failed", c.failed),
                    ("cancelled", c.cancelled),
                ]
                .iter()
                .map(|(s, n)| vec![s.to_string(), n.to_string()])
                .collect();
                print_table(&["STATE", "JOBS"], &rows);
                println!("queue is {}", if paused { "PAUSED" } else { "running" });
                for alert in &firing {
                    println!(
                        "ALERT {} since {}: {}",
                        alert.alert,
                        alert.since.as_deref().unwrap_or("?"),
                        alert.detail.as_deref().unwrap_or("")
                    );
                }
            }
        }
        QueueAction::List { state, limit, page } => {
            let jobs = q.list(state, limit, (page as u64 - 1) * limit as u64).await.map_err(err)?;
            if json_out {
                print_json(&Value::Array(jobs.iter().map(job_json).collect()));
            } else {
                print_table(&JOB_HEADERS, &jobs.iter().map(job_row).collect::<Vec<_>>());
            }
        }
        QueueAction::Retry { id: Some(id), .. } => {
            let change = match id.parse::<LectureId>() {
                Ok(lecture) => lectures.retry(&lecture).await.map_err(|e| e.to_string())?,
                Err(_) => JobChange::NotFound,
            };
            match change {
                JobChange::Done => report(json_out, "retried", &[id]),
                change => return Err(left_alone(&id, change, "only failed or cancelled jobs can be retried")),
            }
        }
        QueueAction::Retry { id: None, all_failed } => {
            let RetriedFailed { retried, source_gone } =
                if all_failed { lectures.retry_failed().await.map_err(|e| e.to_string())? } else { Default::default() };
            for id in &source_gone {
                eprintln!("{id}: its source is no longer kept (VIDPIPE_SOURCE_RETENTION), left failed");
            }
            report(json_out, "retried", &retried);
        }
        QueueAction::Cancel { id } => match lectures.cancel(&id).await.map_err(|e| e.to_string())? {
            JobChange::Done => report(json_out, "cancelled", &[id]),
            change => return Err(left_alone(&id, change, "only waiting, delayed or active jobs can be cancelled")),
        },
        QueueAction::Pause | QueueAction::Resume => {
            let paused = matches!(action, QueueAction::Pause);
            q.set_paused(paused).await.map_err(err)?;
            if json_out {
                print_json(&json!({ "paused": paused }));
            } else {
                println!("queue {}", if paused { "paused" } else { "resumed" });
            }
        }
        QueueAction::Clean { completed_older_than, failed_older_than } => {
            let Cleaned { completed, failed } =
                clean_jobs(q, &lectures, completed_older_than, failed_older_than).await?;
            if json_out {
                print_json(&json!({ "completed": completed, "failed": failed }));
            } else {
                println!("removed {} completed and {} failed/cancelled job records", completed.len(), failed.len());
            }
        }
    }
    Ok(())
}

/// Why the job `id` was left alone: it does not exist (exit code 3), or it
/// is in a state `rule` excludes.
fn left_alone(id: &str, change: JobChange, rule: &str) -> CommandError {
    match change {
        JobChange::NotFound => CommandError::NotFound(format!("{id}: no job with this id")),
        JobChange::NotNow(state) => CommandError::Failed(format!("{id}: the job is {state}; {rule}")),
        JobChange::SourceGone => CommandError::Failed(format!(
            "{id}: the uploaded source is no longer kept (VIDPIPE_SOURCE_RETENTION); upload the video again"
        )),
        JobChange::Done => CommandError::Failed(format!("{id}: reported as left alone after the change")),
    }
}

fn report(json_out: bool, verb: &str, ids: &[String]) {
    if json_out {
        print_json(&json!({ verb: ids }));
    } else {
        for id in ids {
            println!("{verb} {id}");
        }
        println!("{} job(s) {verb}", ids.len());
    }
}

pub async fn lectures_command(action: LecturesAction, json_out: bool, args: LecturesArgs) -> Result<(), CommandError> {
    let Backends { queue, lectures, .. } = connect(&args.queue).await?;
    let (storage, base) = args.storage().map_err(|e| e.to_string())?;
    let storage = startup::open_storage(&storage, args.queue.database.data_dir.join("media"), &base)
        .map_err(|e| e.to_string())?;
    let e = |e: crate::lectures::LectureStoreError| e.to_string();
    match action {
        LecturesAction::List { status, course_id, limit, page } => {
            let docs: Vec<LectureDocument> =
                documents(&lectures, queue.as_ref(), storage.as_ref(), course_id.as_deref())
                    .await?
                    .into_iter()
                    .map(|(_, doc)| doc)
                    .filter(|doc| status.is_none_or(|s| s == doc.processing_status))
                    .collect();
            let (total, skip) = (docs.len(), (page as usize - 1) * limit as usize);
            let docs: Vec<LectureDocument> = docs.into_iter().skip(skip).take(limit as usize).collect();
            if json_out {
                print_json(&serde_json::to_value(&docs).expect("documents serialize"));
            } else {
                let rows: Vec<Vec<String>> = docs
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.course_id.clone(),
                            d.name_of_topic.clone(),
                            d.processing_status.as_str().to_string(),
                            format!("{}%", d.progress),
                            d.attempts.to_string(),
                            d.created_at.clone(),
                            d.processing_error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "COURSE", "TOPIC", "STATUS", "PROGRESS", "ATTEMPTS", "CREATED", "ERROR"], &rows);
                let pages = total.div_ceil(limit as usize).max(1);
                eprintln!("page {page} of {pages} ({total} lectures); --page N for another");
            }
        }
        LecturesAction::Delete { id, status, older_than, dry_run, yes } => {
            let mut doomed = Vec::new();
            if let Some(id) = id {
                let id: LectureId = id.parse().map_err(|e: crate::domain::InvalidValue| e.0)?;
                let found = lectures.get(&id).await.map_err(e)?;
                doomed.push(found.ok_or_else(|| CommandError::NotFound(format!("no lecture with id {id}")))?);
            } else if let Some(status) = status {
                let cutoff = now_ms() - older_than.unwrap_or_default().as_millis() as i64;
                doomed.extend(
                    documents(&lectures, queue.as_ref(), storage.as_ref(), None)
                        .await?
                        .into_iter()
                        .filter(|(lecture, doc)| doc.processing_status == status && lecture.created_at < cutoff)
                        .map(|(lecture, _)| lecture),
                );
            }
            let bulk = status.is_some();
            if dry_run || (bulk && !yes) {
                for lecture in &doomed {
                    eprintln!("{}  {}  {}", lecture.id, lecture.course_id, one_line_text(&lecture.name_of_topic));
                }
            }
            if dry_run {
                if json_out {
                    print_json(&json!({ "wouldDelete": doomed.iter().map(|l| l.id.to_string()).collect::<Vec<_>>() }));
                } else {
                    println!("would delete {} lecture(s); nothing deleted (--dry-run)", doomed.len());
                }
                return Ok(());
            }
            if bulk && !yes && !doomed.is_empty() && !confirm(&format!("Delete these {} lecture(s)?", doomed.len()))? {
                return Err(CommandError::Failed("nothing deleted".into()));
            }
            let mut deleted = Vec::new();
            for lecture in &doomed {
                lectures.remove(lecture, storage.as_ref(), async {}).await.map_err(e)?;
                deleted.push(lecture.id.to_string());
            }
            if json_out {
                print_json(&json!({ "deleted": deleted }));
            } else {
                println!("deleted {} lecture(s)", deleted.len());
            }
        }
    }
    Ok(())
}

/// Asks `question` on the terminal; a script (stdin not a terminal) must
/// say `--yes` instead.
fn confirm(question: &str) -> Result<bool, CommandError> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CommandError::Failed(
            "stdin is not a terminal, so nothing was asked and nothing deleted: add --yes to delete, or --dry-run to list"
                .into(),
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| CommandError::Failed(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `text` on one line, cut to 60 characters.
fn one_line_text(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

/// Every lecture (of a course), newest first, with the document the API
/// shows for it: statuses come from the jobs, so filtering needs both.
async fn documents(
    lectures: &crate::lectures::LectureStore,
    queue: &dyn Queue,
    storage: &dyn crate::publish::Storage,
    course_id: Option<&str>,
) -> Result<Vec<(crate::lectures::Lecture, LectureDocument)>, String> {
    let mut out = Vec::new();
    loop {
        let (page, _) = lectures.list(course_id, 100, out.len() as u64).await.map_err(|e| e.to_string())?;
        if page.is_empty() {
            return Ok(out);
        }
        let ids: Vec<String> = page.iter().map(|l| l.id.to_string()).collect();
        let jobs = queue.get_many(&ids).await.map_err(|e| e.to_string())?;
        for lecture in page {
            let job = jobs.iter().find(|j| j.id == lecture.id.as_str());
            let doc = LectureDocument::new(lecture.clone(), job, storage);
            out.push((lecture, doc));
        }
    }
}

/// Runs every check, reports each, and fails if any failed.
pub async fn doctor(json_out: bool, args: ServiceArgs) -> Result<(), CommandError> {
    let mut results: Vec<(&str, Result<String, String>)> = Vec::new();
    let tools = args.tools.check().map_err(|e| e.to_string());
    results.push(("ffmpeg", tools.clone().and_then(|t| ffmpeg_version(&t))));
    match Config::from_args(args) {
        Err(e) => results.push(("config", Err(e.to_string()))),
        Ok(config) => {
            results.push(("config", Ok(format!("data dir {}", config.data_dir.display()))));
            match Backends::connect(&config).await {
                Err(e) => results.push(("database+queue", Err(e.to_string()))),
                Ok(backends) => {
                    results.push((
                        "database",
                        Ok(config.database_url.split('@').next_back().unwrap_or_default().to_string()),
                    ));
                    let counts = backends.queue.counts().await.map_err(|e| e.to_string());
                    results.push((
                        "queue",
                        counts.map(|c| format!("{} waiting, {} active, {} failed", c.waiting, c.active, c.failed)),
                    ));
                    let base = config.public_base_url.clone().unwrap_or_else(|| format!("http://{}", config.listen));
                    let stored = async {
                        // For S3 this lists, writes and deletes, and names what is wrong.
                        let storage =
                            startup::storage(&config, &base, StorageCheck::Access).await.map_err(|e| e.to_string())?;
                        let key = format!("doctor-{}", uuid::Uuid::new_v4().simple());
                        storage
                            .put_bytes(&format!("{key}/check.txt"), b"vidpipe doctor".to_vec())
                            .await
                            .map_err(|e| e.to_string())?;
                        storage.delete_prefix(&key).await.map_err(|e| e.to_string())
                    }
                    .await;
                    results.push(("storage", stored.map(|_| "write and delete ok".to_string())));
                    if let crate::config::StorageConfig::S3(s3) = &config.storage {
                        let playback = match crate::publish::S3Storage::new(s3.as_ref().clone(), &base) {
                            // A check: doctor changes nothing on the bucket.
                            Ok(s3) => startup::bucket_playback(&config, &s3, false).await,
                            Err(e) => Err(e.to_string()),
                        };
                        results.push(("browser playback", playback));
                    }
                }
            }
            results.push(("transcode", tiny_transcode(&config).await));
        }
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if json_out {
        let checks: Vec<Value> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(detail) => json!({ "check": name, "ok": true, "detail": detail }),
                Err(detail) => json!({ "check": name, "ok": false, "detail": detail }),
            })
            .collect();
        print_json(&json!({ "ok": failed == 0, "checks": checks }));
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|(name, r)| match r {
                Ok(detail) => vec!["ok".into(), name.to_string(), detail.clone()],
                Err(detail) => vec!["FAIL".into(), name.to_string(), detail.clone()],
            })
            .collect();
        // Each detail says what to fix: on one line, never cut.
        print_rows(&["", "CHECK", "DETAIL"], &rows, |text| text.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} check(s) failed").into())
    }
}

/// `vidpipe healthcheck URL`.
pub async fn healthcheck(url: &str) -> Result<(), CommandError> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().map_err(|e| e.to_string())?;
    let response = client.get(url).send().await.map_err(|e| format!("{url}: {e}"))?;
    match response.status() {
        status if status.is_success() => Ok(()),
        status => Err(format!("{url} answered {status}").into()),
    }
}

fn ffmpeg_version(tools: &Tools) -> Result<String, String> {
    let out = std::process::Command::new(&tools.ffmpeg).arg("-version").output().map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string())
}

/// Encodes a generated one-second clip through the real pipeline.
async fn tiny_transcode(config: &Config) -> Result<String, String> {
    use crate::transcode::{ffmpeg::Watchdog, plan::Plan, Transcoder};
    let dir = tempfile_dir(config)?;
    let result = async {
        let clip = dir.join("clip.mp4");
        let made = tokio::process::Command::new(&config.tools.ffmpeg)
            .args(["-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1", "-f", "lavfi", "-i"])
            .args(["sine=duration=1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-y"])
            .arg(&clip)
            .status()
            .await
            .map_err(|e| e.to_string())?;
        if !made.success() {
            return Err("ffmpeg could not generate a test clip (is libx264 available?)".to_string());
        }
        let media = crate::ingest::probe::probe(&config.tools.ffprobe, &clip).await.map_err(|e| e.to_string())?;
        let plan = Plan::new(&media, &config.ladder);
        let transcoder = Transcoder {
            tools: config.tools.clone(),
            watchdog: Watchdog { timeout: Duration::from_secs(60), stall: Duration::from_secs(30) },
            threads: config.encoder_threads,
        };
        let (tx, _rx) = tokio::sync::watch::channel(0.0);
        let out = dir.join("out");
        let cancel = tokio_util::sync::CancellationToken::new();
        transcoder.encode(&media, &plan, &clip, &out, &cancel, &tx).await.map_err(|e| e.to_string())?;
        crate::transcode::write_master_and_vod(&plan, &out).await.map_err(|e| e.to_string())?;
        Ok(format!("{} rendition(s) encoded", plan.renditions.len()))
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    result
}

fn tempfile_dir(config: &Config) -> Result<std::path::PathBuf, String> {
    let dir = config.work_dir().join(format!("doctor-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}
