//! Direct uploads: a backend with a key makes a one-time URL; a browser
//! with no key uploads one file to it, by multipart POST or by tus, with
//! the fields the backend fixed. Used or expired URLs start nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::*;
use crate::resumable::{tus_client, tus_client_ready};

/// A one-time URL made with `key`; returns the answer.
async fn grant(app: &TestApp, key: &str, fields: Value) -> Value {
    let made = app.client.post(format!("{}/api/direct-uploads", app.base)).bearer_auth(key).json(&fields).send();
    let made = made.await.unwrap();
    assert_eq!(made.status(), 201);
    let lecture = made.headers()["location"].to_str().unwrap().to_string();
    let body: Value = made.json().await.unwrap();
    assert_eq!(lecture, format!("/api/direct-uploads/{}", body["lectureId"].as_str().unwrap()));
    body
}

fn form(file: &std::path::Path, course: &str) -> reqwest::multipart::Form {
    let bytes = std::fs::read(file).unwrap();
    reqwest::multipart::Form::new()
        .text("courseId", course.to_string())
        .part("uploadedFile", reqwest::multipart::Part::bytes(bytes).file_name("from-the-browser.mp4"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_uploads_once_with_the_url_and_no_key() {
    let app = spawn_app().await;
    let key = create_key(app.data_dir.path(), "backend", "upload");
    let dir = tempfile::tempdir().unwrap();
    let video = clip(dir.path(), "v.mp4", "320x240", "25", 2, true);
    let c = &app.client;

    let keyless =
        c.post(format!("{}/api/direct-uploads", app.base)).json(&json!({"courseId": "c", "nameOfTopic": "t"}));
    assert_eq!(keyless.send().await.unwrap().status(), 401, "only a backend with a key makes URLs");
    for (fields, status, says) in [
        (json!({"courseId": "c"}), 400, "nameOfTopic"),
        (json!({"courseId": "c", "nameOfTopic": "t", "expiresIn": 5}), 400, "expiresIn"),
        (json!({"courseId": "c", "nameOfTopic": "t", "maxBytes": 1u64 << 40}), 400, "upload limit"),
        (json!({"courseId": "c", "nameOfTopic": "t", "courseID": "typo"}), 400, "courseID"),
        // serde would read the struct from an array, field by field.
        (json!(["c", "t"]), 400, "send a JSON object"),
    ] {
        let refused = c.post(format!("{}/api/direct-uploads", app.base)).bearer_auth(&key).json(&fields);
        let refused = refused.send().await.unwrap();
        assert_eq!(refused.status(), status, "{fields}");
        assert!(refused.text().await.unwrap().contains(says), "{fields}: names {says}");
    }

    let made = grant(&app, &key, json!({"courseId": "math101", "nameOfTopic": "<b>Limits</b>", "priority": 5})).await;
    let id = made["lectureId"].as_str().unwrap().to_string();
    let url = format!("{}{}", app.base, made["url"].as_str().unwrap());
    assert_eq!(made["status"], "waiting");
    let status = |key: Option<&str>| {
        let request = c.get(format!("{}/api/direct-uploads/{id}", app.base));
        let request = match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        async move { request.send().await.unwrap() }
    };
    let seen: Value = status(Some(&key)).await.json().await.unwrap();
    assert_eq!((seen["status"].as_str(), seen.get("url")), (Some("waiting"), None), "the secret is shown once: {seen}");
    let other = create_key(app.data_dir.path(), "another-backend", "upload");
    assert_eq!(status(Some(&other)).await.status(), 404, "another key's URLs are not its business");
    let lecture = c.get(format!("{}/api/lectures/{id}", app.base)).bearer_auth(&key).send().await.unwrap();
    assert_eq!(lecture.status(), 404, "no lecture before the file");

    // A wrong secret, or an id that is not one, is simply not a URL.
    let wrong = url.rsplit_once('/').unwrap().0.to_string() + "/not-the-secret";
    let refused = c.post(&wrong).multipart(form(&video, "x")).send().await.unwrap();
    assert_eq!(refused.status(), 404);
    // A file that is not a video: refused, and the URL still serves.
    let noise = dir.path().join("noise.mp4");
    std::fs::write(&noise, vec![7u8; 4000]).unwrap();
    assert_eq!(c.post(&url).multipart(form(&noise, "x")).send().await.unwrap().status(), 422);

    // No key: the URL is the credential. The form's own fields do not count.
    let accepted = c.post(&url).multipart(form(&video, "someone-elses-course")).send().await.unwrap();
    assert_eq!(accepted.status(), 202);
    let accepted: Value = accepted.json().await.unwrap();
    assert_eq!(accepted["lectureId"], id.as_str(), "the lecture has the id the backend was given");
    let again = c.post(&url).multipart(form(&video, "x")).send().await.unwrap();
    assert_eq!(again.status(), 409, "one URL, one upload");
    assert!(again.text().await.unwrap().contains("ask the site for a new one"));

    let doc = app.api.with_key(&key).wait_for(&id, "completed", Duration::from_secs(90)).await;
    assert_eq!(doc["courseId"], "math101");
    assert_eq!(doc["nameOfTopic"], "<b>Limits</b>");
    let seen: Value = status(Some(&key)).await.json().await.unwrap();
    assert_eq!(seen["status"], "uploaded");
    let lectures = c.get(format!("{}/api/lectures", app.base)).bearer_auth(&key).send().await.unwrap();
    let lectures: Value = lectures.json().await.unwrap();
    assert_eq!(lectures["total"], 1, "the refused tries left no lecture: {lectures}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_through_the_url_resumes_and_is_the_only_upload_it_serves() {
    let app = spawn_app().await;
    let key = create_key(app.data_dir.path(), "backend", "upload");
    let dir = tempfile::tempdir().unwrap();
    let video = std::fs::read(clip(dir.path(), "v.mp4", "320x240", "25", 3, true)).unwrap();
    let size = video.len() as u64;
    let c = &app.client;
    let made = grant(&app, &key, json!({"courseId": "c1", "nameOfTopic": "t", "maxBytes": size})).await;
    let id = made["lectureId"].as_str().unwrap().to_string();
    let url = format!("{}{}", app.base, made["url"].as_str().unwrap());
    let tus = |request: reqwest::RequestBuilder| request.header("Tus-Resumable", "1.0.0");

    let too_big = tus(c.post(&url)).header("Upload-Length", (size + 1).to_string()).send().await.unwrap();
    assert_eq!(too_big.status(), 413, "the backend's size limit holds");
    let created = tus(c.post(&url))
        .header("Upload-Length", size.to_string())
        .header("Upload-Metadata", "courseId ZXZpbA==")
        .header("Content-Type", "application/offset+octet-stream")
        .body(video[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["tus-resumable"], "1.0.0");
    assert_eq!(format!("{}{}", app.base, created.headers()["location"].to_str().unwrap()), url);
    let second = tus(c.post(&url)).header("Upload-Length", size.to_string()).send().await.unwrap();
    assert_eq!(second.status(), 409, "a second tus upload cannot start");
    let plain = c.post(&url).multipart(form(&dir.path().join("v.mp4"), "c")).send().await.unwrap();
    assert_eq!(plain.status(), 409, "nor a plain one");
    let through_keyed = tus(c.head(format!("{}/api/uploads/{id}", app.base))).bearer_auth(&key).send().await.unwrap();
    assert_eq!(through_keyed.status(), 404, "the upload is the URL's, not the backend key's");

    let resume = tus(c.head(&url)).send().await.unwrap();
    assert_eq!(resume.status(), 200);
    assert_eq!(resume.headers()["upload-offset"], "1000");
    let rest = tus(c.patch(&url))
        .header("Upload-Offset", "1000")
        .header("Content-Type", "application/offset+octet-stream")
        .body(video[1000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 204);
    assert_eq!(rest.headers()["vidpipe-lecture-id"], id.as_str());
    let doc = app.api.with_key(&key).wait_for(&id, "completed", Duration::from_secs(90)).await;
    assert_eq!(doc["courseId"], "c1", "Upload-Metadata does not override the URL's fields");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_js_client_uploads_to_the_url_with_no_key() {
    if !tus_client_ready() {
        return;
    }
    let app = spawn_app().await;
    let key = create_key(app.data_dir.path(), "backend", "upload");
    let dir = tempfile::tempdir().unwrap();
    let video = clip(dir.path(), "v.mp4", "640x360", "30", 4, true);
    let made = grant(&app, &key, json!({"courseId": "c1", "nameOfTopic": "from tus-js-client"})).await;
    let url = format!("{}{}", app.base, made["url"].as_str().unwrap());
    let report =
        tus_client(json!({"endpoint": url, "file": video, "chunkSize": 65536, "metadata": {"filename": "v.mp4"}}));
    let report = report.await;
    assert_eq!(report["done"], true, "{report}");
    assert_eq!(report["lectureId"], made["lectureId"], "{report}");
    let backend = app.api.with_key(&key);
    let doc = backend.wait_for(made["lectureId"].as_str().unwrap(), "completed", Duration::from_secs(90)).await;
    assert_eq!(doc["nameOfTopic"], "from tus-js-client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_url_starts_nothing() {
    let app = spawn_app().await;
    let key = create_key(app.data_dir.path(), "backend", "upload");
    let dir = tempfile::tempdir().unwrap();
    let video = clip(dir.path(), "v.mp4", "320x240", "25", 1, false);
    let made = grant(&app, &key, json!({"courseId": "c1", "nameOfTopic": "t", "expiresIn": 60})).await;
    let id = made["lectureId"].as_str().unwrap().to_string();
    let url = format!("{}{}", app.base, made["url"].as_str().unwrap());
    // An hour passes, as far as the URL is concerned.
    let path = format!("sqlite://{}", app.data_dir.path().join("vidpipe.db").display());
    let db = sqlx::SqlitePool::connect(&path).await.unwrap();
    sqlx::query("UPDATE direct_uploads SET expires_at = expires_at - 3600000 WHERE id = ?")
        .bind(&id)
        .execute(&db)
        .await
        .unwrap();

    let late = app.client.post(&url).multipart(form(&video, "c")).send().await.unwrap();
    assert_eq!(late.status(), 410);
    assert!(late.text().await.unwrap().contains("expired"));
    let late_tus = app.client.post(&url).header("Tus-Resumable", "1.0.0").header("Upload-Length", "100");
    assert_eq!(late_tus.send().await.unwrap().status(), 410);
    let seen = app.client.get(format!("{}/api/direct-uploads/{id}", app.base)).bearer_auth(&key).send().await.unwrap();
    let seen: Value = seen.json().await.unwrap();
    assert_eq!(seen["status"], "expired");
}
