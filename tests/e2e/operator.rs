//! The operator commands, run as a person would, against a live server's data.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

async fn eventually_errors(app: &TestApp, id: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while app.job(id).await["errors"].as_array().unwrap().len() < n {
        assert!(std::time::Instant::now() < deadline, "no second attempt");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn vidpipe(app: &TestApp, args: &[&str]) -> (bool, Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
        .args(args)
        .arg("--json")
        .env("VIDPIPE_DATA_DIR", app.data_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (out.status.success(), value, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_lecture_commands_find_retry_and_delete_failed_work() {
    let dir = tempfile::tempdir().unwrap();
    // An ffmpeg whose encode always fails, so the job fails for good.
    let broken = ffmpeg_replacing_the_encode(dir.path(), "echo 'encoder exploded' >&2; exit 1");
    let app = spawn_app_with(|c| {
        c.tools.ffmpeg = broken.clone();
        c.attempts = 1;
    })
    .await;
    let clip = clip(dir.path(), "ok.mp4", "320x240", "30", 2, false);
    let id = app.upload_ok(&clip).await;
    let doc = app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    assert!(doc["processingError"].as_str().unwrap().contains("encoder exploded"), "{doc}");

    let (ok, status, err) = vidpipe(&app, &["queue", "status"]);
    assert!(ok, "{err}");
    assert_eq!(status["counts"]["failed"], 1, "{status}");

    let (ok, failed, err) = vidpipe(&app, &["queue", "list", "--state", "failed"]);
    assert!(ok, "{err}");
    assert_eq!(failed[0]["id"], id.as_str(), "{failed}");
    assert!(failed[0]["errors"][0]["error"].as_str().unwrap().contains("encoder exploded"));

    let jobs: Value =
        app.client.get(format!("{}/api/jobs?state=failed", app.base)).send().await.unwrap().json().await.unwrap();
    assert_eq!((jobs["total"].as_u64(), jobs["jobs"][0]["id"].as_str()), (Some(1), Some(id.as_str())), "{jobs}");
    for query in ["state=stuck", "page=1"] {
        let bad = app.client.get(format!("{}/api/jobs?{query}", app.base)).send().await.unwrap();
        assert_eq!(bad.status(), 400, "{query}");
        let body: Value = bad.json().await.expect("JSON error body");
        assert_eq!(body["error"], "bad_request", "{body}");
    }

    let (ok, listed, err) = vidpipe(&app, &["lectures", "list", "--status", "failed"]);
    assert!(ok, "{err}");
    assert_eq!(listed.as_array().unwrap().len(), 1);

    let (ok, retried, err) = vidpipe(&app, &["queue", "retry", "--all-failed"]);
    assert!(ok, "{err}");
    assert_eq!(retried["retried"][0], id.as_str());
    // It runs again and fails again: the encoder is still broken.
    eventually_errors(&app, &id, 2).await;
    app.wait_for(&id, "failed", Duration::from_secs(60)).await;
    assert_eq!(app.job(&id).await["errors"].as_array().unwrap().len(), 2);

    // Bulk deletes show first, and want --yes from a script.
    let lecture_status = |app: &TestApp| {
        let url = format!("{}/api/lectures/{id}", app.base);
        async move { reqwest::get(url).await.unwrap().status() }
    };
    let (ok, listed, err) =
        vidpipe(&app, &["lectures", "delete", "--status", "failed", "--older-than", "0s", "--dry-run"]);
    assert!(ok && listed["wouldDelete"][0] == id.as_str() && err.contains(id.as_str()), "{listed} {err}");
    assert_eq!(lecture_status(&app).await, 200, "--dry-run deletes nothing");
    let (ok, _, err) = vidpipe(&app, &["lectures", "delete", "--status", "failed", "--older-than", "0s"]);
    assert!(!ok && err.contains("add --yes"), "no terminal, no --yes: refused: {err}");
    assert_eq!(lecture_status(&app).await, 200, "nothing deleted without --yes");
    let (ok, _, err) = vidpipe(&app, &["lectures", "delete", "--status", "failed"]);
    assert!(!ok && err.contains("--older-than"), "no silent age: {err}");
    let (ok, deleted, err) =
        vidpipe(&app, &["lectures", "delete", "--status", "failed", "--older-than", "0s", "--yes"]);
    assert!(ok, "{err}");
    assert_eq!(deleted["deleted"][0], id.as_str());
    let response = app.client.get(format!("{}/api/lectures/{id}", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(files_under(&app.uploads_dir()).is_empty());

    let (ok, report, err) = vidpipe(&app, &["doctor"]);
    assert!(ok, "{err} {report}");
    assert_eq!(report["ok"], true);
    let checks: Vec<&str> = report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for check in ["ffmpeg", "database", "queue", "storage", "transcode"] {
        assert!(checks.contains(&check), "{report}");
    }

    let (ok, _, err) = vidpipe(&app, &["queue", "list", "--state", "running"]);
    assert!(!ok && err.contains("[possible values: waiting, active"), "{err}");
}

/// Scripts tell "no such thing" (3) from "it failed" (1) and from a usage
/// error (2), and a command that did its job exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_not_found_from_failed_and_from_misuse() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let id = app.upload_ok(&clip(dir.path(), "v.mp4", "320x240", "30", 1, false)).await;
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let code = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
            .args(args)
            .env("VIDPIPE_DATA_DIR", app.data_dir.path())
            // Operator commands never run ffmpeg: they need none.
            .env("VIDPIPE_FFMPEG", "/nonexistent/ffmpeg")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let unknown = "0123456789abcdef0123456789abcdef";
    let (c, err) = code(&["queue", "retry", unknown]);
    assert_eq!(c, Some(3), "retry of an unknown job: {err}");
    assert!(err.contains("no job with this id"), "{err}");
    let (c, err) = code(&["queue", "retry", &id]);
    assert_eq!(c, Some(1), "retry of a completed job is refused, not ignored: {err}");
    assert!(err.contains("the job is completed"), "{err}");
    assert_eq!(code(&["queue", "cancel", unknown]).0, Some(3));
    assert_eq!(code(&["queue", "cancel", &id]).0, Some(1));
    assert_eq!(code(&["lectures", "delete", unknown]).0, Some(3));
    assert_eq!(code(&["keys", "revoke", "nobody"]).0, Some(3));
    assert_eq!(code(&["queue", "retry", "--no-such-flag"]).0, Some(2));
    assert_eq!(code(&["queue", "status"]).0, Some(0));
    assert_eq!(code(&["lectures", "list"]).0, Some(0));
    assert_eq!(app.lecture(&id).await["processingStatus"], "completed", "nothing above touched the lecture");
}

/// `vidpipe completions SHELL`: a script the shell accepts, naming the commands.
#[test]
fn shell_completions_load() {
    let bin = env!("CARGO_BIN_EXE_vidpipe");
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source <('{bin}' completions bash) && complete -p vidpipe"))
        .output()
        .unwrap();
    assert!(loaded.status.success(), "{}", String::from_utf8_lossy(&loaded.stderr));
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("-F _vidpipe vidpipe"));
    for shell in ["zsh", "fish"] {
        let out = std::process::Command::new(bin).args(["completions", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && script.contains("queue") && script.contains("doctor"), "{shell}: {script}");
    }
    let unknown = std::process::Command::new(bin).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2), "an unknown shell is a usage error");
}

/// Service flags are global (before or after the action), `queue --help`
/// lists only what applies, and inspecting a service never makes a new,
/// empty database where the service's was expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_flags_are_global_and_a_missing_database_is_named_not_made() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let id = app.upload_ok(&clip(dir.path(), "v.mp4", "320x240", "30", 1, false)).await;
    app.wait_for(&id, "completed", Duration::from_secs(60)).await;
    let data = app.data_dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vidpipe"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("VIDPIPE_DATA_DIR")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for args in
        [&["queue", "status", "--data-dir", data, "--json"][..], &["queue", "--data-dir", data, "status", "--json"][..]]
    {
        let (code, out, err) = run(args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        let status: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(status["counts"]["completed"], 1, "{args:?}: {status}");
    }
    let (code, out, err) = run(&["lectures", "list", "--json", "--data-dir", data, "--limit", "1"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()[0]["_id"], id.as_str());
    for (list, limit) in [("queue", "0"), ("queue", "1001"), ("lectures", "5000"), ("webhooks", "0")] {
        let (code, _, err) = run(&[list, "list", "--data-dir", data, "--limit", limit]);
        assert_eq!(code, Some(2), "{list} list --limit {limit}: {err}");
        assert!(err.contains("1..=1000"), "{err}");
    }

    let (_, help, _) = run(&["queue", "--help"]);
    assert!(help.contains("--data-dir") && help.contains("--queue-url"), "{help}");
    for other in ["--concurrency", "--ffmpeg", "--listen", "--s3-endpoint", "--webhook-url"] {
        assert!(!help.contains(other), "`queue --help` lists {other}, which does not apply:\n{help}");
    }

    // In a directory without the service's data: an error that says where
    // it looked, and nothing created there.
    let (code, _, err) = run(&["queue", "status"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no vidpipe database at ./vidpipe-data/vidpipe.db"), "{err}");
    let (code, _, err) = run(&["lectures", "list", "--data-dir", "elsewhere"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("elsewhere/vidpipe.db"), "{err}");
    assert!(!dir.path().join("vidpipe-data").exists() && !dir.path().join("elsewhere").exists());
}
