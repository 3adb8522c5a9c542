//! The OpenAPI document: it names every route the router serves, and a live
//! server fuzzed against it by schemathesis gives no 5xx, no answer outside
//! it, and leaves no half-made lecture.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::*;

/// `(method, path)` of every `.route(...)` in `src/http/mod.rs`, read from
/// the source so that a route added there without a document entry fails here.
fn routes_in_router() -> BTreeSet<(String, String)> {
    let source = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/mod.rs")).unwrap();
    // Without whitespace, a `.route(` that rustfmt split over lines reads the same.
    let source: String = source.split_whitespace().collect();
    let mut routes = BTreeSet::new();
    for chunk in source.split(".route(\"").skip(1) {
        let (path, rest) = chunk.split_once('"').unwrap();
        let handler = rest.trim_start_matches(',');
        let method = ["get", "post", "head", "patch", "options", "axum::routing::delete"]
            .into_iter()
            .find(|m| handler.starts_with(&format!("{m}(")))
            .unwrap_or_else(|| panic!("unknown method for route {path}: {handler:.40}"));
        routes.insert((method.trim_start_matches("axum::routing::").to_string(), path.to_string()));
    }
    routes
}

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            out.insert((method.clone(), path.clone()));
        }
    }
    out
}

#[tokio::test]
async fn the_document_names_every_route_and_every_error() {
    let app = spawn_app().await;
    let response = app.client.get(format!("{}/api/openapi.json", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    let routes = routes_in_router();
    assert!(routes.len() >= 20, "the router has more routes than this: {routes:?}");
    let named = documented(&doc);
    let missing: Vec<_> = routes.difference(&named).collect();
    assert!(missing.is_empty(), "routes the document does not name: {missing:?}");
    // The other way round, only `/media/{path}` (a nested file server,
    // served when the storage is the local disk).
    let extra: Vec<_> = named.difference(&routes).collect();
    assert_eq!(extra, [&("get".to_string(), "/media/{path}".to_string())], "documented but not routed");

    for (method, path) in &named {
        let operation = &doc["paths"][path][method];
        let responses = operation["responses"].as_object().unwrap();
        assert!(responses.keys().any(|s| s.starts_with('2') || s.starts_with('3')), "{method} {path}: no success");
        if operation.get("security").is_some() {
            for status in ["401", "403"] {
                assert!(responses.contains_key(status), "{method} {path}: no {status}");
            }
        }
    }
    // The multipart form, with the seed's field names and the file as binary.
    let form = &doc["paths"]["/api/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"];
    let form = match form.get("$ref") {
        Some(r) => &doc["components"]["schemas"][r.as_str().unwrap().rsplit('/').next().unwrap()],
        None => form,
    };
    for field in ["uploadedFile", "courseId", "nameOfTopic", "priority"] {
        assert!(form["properties"].get(field).is_some(), "upload form lacks {field}: {form}");
    }
    assert_eq!(form["properties"]["uploadedFile"]["contentMediaType"], "application/octet-stream");
}

/// The schemathesis CLI, or `None` with a loud skip outside CI.
fn schemathesis() -> Option<String> {
    let st = std::env::var("VIDPIPE_TEST_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    match Command::new(&st).arg("--version").output() {
        Ok(out) if out.status.success() => Some(st),
        _ if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: schemathesis (`{st}`) not found; `pip install schemathesis==4.32.5`");
            None
        }
        _ => panic!("schemathesis (`{st}`) is not installed in CI; .ci/run installs it"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let Some(st) = schemathesis() else { return };
    let data = tempfile::tempdir().unwrap();
    let admin = create_key(data.path(), "fuzzer", "admin");
    let (_server, api) = serve(data.path(), &[]).await;

    // One real lecture first, so lists and documents have something in them.
    let clips = tempfile::tempdir().unwrap();
    let clip = clip(clips.path(), "seed.mp4", "320x240", "25", 2, true);
    let bytes = std::fs::read(&clip).unwrap();
    let form = reqwest::multipart::Form::new()
        .text("courseId", "c1")
        .text("nameOfTopic", "seed")
        .part("uploadedFile", reqwest::multipart::Part::bytes(bytes).file_name("seed.mp4"));
    let accepted = api.client.post(format!("{}/api/upload", api.base)).bearer_auth(&admin).multipart(form);
    let accepted: Value = accepted.send().await.unwrap().json().await.unwrap();
    let seed = accepted["lectureId"].as_str().unwrap().to_string();
    api.with_key(&admin).wait_for(&seed, "completed", Duration::from_secs(60)).await;

    // What the document cannot say: whether the bytes of a file are a video
    // (415, 422), tus's version rule, and what `Upload-Metadata` must hold. Reads are pointed at the seed
    // lecture, so they get past 404.
    let config = data.path().join("schemathesis.toml");
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/schemathesis_hooks.py");
    let hooks = hooks.display();
    std::fs::write(
        &config,
        format!(
            r#"
hooks = "{hooks}"

# Also 400: `captions` and `captionsLanguage` go together, and a tag must
# name a known ISO 639 language.
[[operations]]
include-name = "POST /api/upload"
checks.positive_data_acceptance.expected-statuses = ["202", "400", "415", "422", "429", "503"]

# The same two rules for captions added later; and whether the bytes are
# WebVTT or SRT (422). Sent to the seed lecture, so tracks are stored and
# published for real.
[[operations]]
include-name = "POST /api/lectures/{{id}}/captions"
checks.positive_data_acceptance.expected-statuses = ["200", "201", "400", "404", "409", "413", "422"]
parameters = {{ id = "{seed}" }}

# tus answers 412 to a request without `Tus-Resumable: 1.0.0` before it
# looks at anything else, as the protocol says.
[[operations]]
include-path-regex = "^/api/(uploads|direct-uploads/.+/)"
checks.negative_data_rejection.expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "412", "413", "415", "422", "428", "429"]
checks.missing_required_header.expected-statuses = ["400", "401", "403", "412"]

# `Upload-Metadata` must hold courseId and nameOfTopic, base64-encoded: a
# rule a header's schema cannot state; nor the size limit (`Tus-Max-Size`),
# which is the server's setting.
[[operations]]
include-name = "POST /api/uploads"
checks.positive_data_acceptance.expected-statuses = ["201", "400", "413", "429", "503"]

# `maxBytes` over the server's limit (a setting) is 400.
[[operations]]
include-name = "POST /api/direct-uploads"
checks.positive_data_acceptance.expected-statuses = ["201", "400"]

# A made-up id and secret are never a one-time URL: 404, whatever the body.
[[operations]]
include-path-regex = "^/api/direct-uploads/.+/"
checks.positive_data_acceptance.expected-statuses = ["200", "201", "202", "204", "404"]

[[operations]]
include-method = "GET"
parameters = {{ id = "{seed}", rendition = "240p" }}
max-stream-events = 1
"#
        ),
    )
    .unwrap();
    let seed_arg = std::env::var("VIDPIPE_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let out = Command::new(&st)
        .current_dir(data.path())
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("{}/api/openapi.json", api.base)])
        .args(["--header", &format!("Authorization: Bearer {admin}")])
        .args(["--checks", "all", "--max-examples", "20", "--seed", &seed_arg, "--workers", "1"])
        .args(["--request-timeout", "10", "--no-color"])
        // The stream of every event has nothing to say while nothing happens,
        // and never ends by design: `tests/e2e/operations.rs` covers it.
        .args(["--exclude-path", "/api/events"])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&out.stdout);
    // The summary (operations, phases, cases generated) shows with --nocapture.
    let summary = report.find("SUMMARY").map_or("", |at| &report[at..]);
    eprintln!("schemathesis (seed {seed_arg}):\n{summary}");
    assert!(
        out.status.success(),
        "schemathesis found problems (seed {seed_arg}):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No half-made lecture: every lecture not finished has its job, every
    // upload file belongs to a lecture, and no spool file is left.
    let lectures: Value = api
        .client
        .get(format!("{}/api/lectures?limit=100", api.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lectures = lectures["lectures"].as_array().unwrap();
    // The stateful phase may have deleted the seed lecture (a link leads
    // from the list to DELETE): then all of it is gone, job and files too.
    if !lectures.iter().any(|l| l["_id"] == seed.as_str()) {
        let job = api.client.get(format!("{}/api/jobs/{seed}", api.base)).bearer_auth(&admin).send().await.unwrap();
        assert_eq!(job.status(), 404, "the deleted seed lecture left its job");
        assert!(!data.path().join("media").join(&seed).exists(), "the deleted seed lecture left its files");
        let sources = files_under(&data.path().join("uploads"));
        assert!(
            !sources.iter().any(|f| f.to_string_lossy().contains(&seed)),
            "the deleted seed lecture left its source"
        );
    }
    for lecture in lectures {
        let id = lecture["_id"].as_str().unwrap();
        if matches!(lecture["processingStatus"].as_str(), Some("pending" | "processing")) {
            let job = api.client.get(format!("{}/api/jobs/{id}", api.base)).bearer_auth(&admin).send().await.unwrap();
            assert_eq!(job.status(), 200, "lecture {id} is {} without a job", lecture["processingStatus"]);
        }
    }
    for file in files_under(&data.path().join("uploads")) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with(".incoming-"), "a spooled upload is left: {name}");
        let id = name.split('.').next().unwrap();
        assert!(lectures.iter().any(|l| l["_id"] == id), "{name} belongs to no lecture");
    }
}
