//! The S3 backend on its own against a real server: headers, multipart,
//! listing, deletion, the start-up check and the retry budget.

use std::time::{Duration, Instant};

use vidpipe::publish::s3::{S3Config, S3Storage};
use vidpipe::publish::Storage;

use crate::server::S3Server;

fn signed(config: S3Config) -> S3Storage {
    S3Storage::new(S3Config { signed_url_ttl: Some(Duration::from_secs(300)), ..config }, "http://api.invalid").unwrap()
}

/// Content-Type and Cache-Control as a player receives them.
async fn served_headers(storage: &S3Storage, key: &str) -> (String, String, usize) {
    let url = storage.presigned_url(key).await.unwrap().expect("signed storage signs");
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (content_type, cache_control) = (header("content-type"), header("cache-control"));
    (content_type, cache_control, response.bytes().await.unwrap().len())
}

#[tokio::test]
async fn objects_carry_their_content_type_and_large_files_go_up_in_parts() {
    let Some(server) = S3Server::start() else { return };
    let storage = signed(S3Config { multipart_threshold: 6 << 20, ..server.config("vod") });
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("seg_00000.ts");
    std::fs::write(&small, vec![0x47u8; 188 * 100]).unwrap();
    // 13 MiB over a 6 MiB threshold: parts of 8 MiB and 5 MiB.
    let large = dir.path().join("seg_00001.ts");
    let large_bytes: Vec<u8> = (0..13u32 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&large, &large_bytes).unwrap();
    let thumb = dir.path().join("thumbnail.jpg");
    std::fs::write(&thumb, b"\xff\xd8\xff\xe0jpeg").unwrap();

    storage.put_file("L/a/240p/seg_00000.ts", &small).await.unwrap();
    storage.put_file("L/a/240p/seg_00001.ts", &large).await.unwrap();
    storage.put_file("L/a/thumbnail.jpg", &thumb).await.unwrap();
    storage.put_bytes("L/a/240p/index.m3u8", b"#EXTM3U\n".to_vec()).await.unwrap();
    storage.put_bytes("L/a/master.m3u8", b"#EXTM3U\n".to_vec()).await.unwrap();

    assert_eq!(
        server.objects().await,
        [
            "vod/L/a/240p/index.m3u8",
            "vod/L/a/240p/seg_00000.ts",
            "vod/L/a/240p/seg_00001.ts",
            "vod/L/a/master.m3u8",
            "vod/L/a/thumbnail.jpg"
        ]
    );
    let (ct, cc, len) = served_headers(&storage, "L/a/240p/seg_00001.ts").await;
    assert_eq!((ct.as_str(), len), ("video/mp2t", large_bytes.len()), "multipart object");
    // A multipart upload's ETag is `<md5 of the part md5s>-<parts>`; a
    // single PUT's is the plain md5.
    let etag = |key: &'static str| {
        let storage = &storage;
        async move {
            let url = storage.presigned_url(key).await.unwrap().unwrap();
            let response = reqwest::get(&url).await.unwrap();
            response.headers()["etag"].to_str().unwrap().trim_matches('"').to_string()
        }
    };
    assert!(etag("L/a/240p/seg_00001.ts").await.ends_with("-2"), "two parts");
    assert!(!etag("L/a/240p/seg_00000.ts").await.contains('-'), "one PUT");
    assert!(cc.contains("immutable"), "segments cache long: {cc}");
    assert_eq!(storage.get_bytes("L/a/240p/seg_00001.ts").await.unwrap(), large_bytes, "parts joined in order");
    let (ct, cc, _) = served_headers(&storage, "L/a/240p/seg_00000.ts").await;
    assert_eq!(ct, "video/mp2t");
    assert!(cc.contains("max-age=31536000"), "{cc}");
    let (ct, cc, _) = served_headers(&storage, "L/a/master.m3u8").await;
    assert_eq!(ct, "application/vnd.apple.mpegurl");
    assert!(cc.contains("max-age=2"), "playlists cache briefly: {cc}");
    let (ct, _, _) = served_headers(&storage, "L/a/thumbnail.jpg").await;
    assert_eq!(ct, "image/jpeg");
}

#[tokio::test]
async fn listing_and_deleting_stay_inside_the_prefix() {
    let Some(server) = S3Server::start() else { return };
    let storage = S3Storage::new(server.config("vod"), "http://api.invalid").unwrap();
    for key in ["L/a/master.m3u8", "L/a/240p/seg_00000.ts", "L/b/master.m3u8", "L2/a/master.m3u8"] {
        storage.put_bytes(key, b"x".to_vec()).await.unwrap();
    }
    // A neighbour whose name starts like ours must survive.
    storage.put_bytes("Lx/a/master.m3u8", b"x".to_vec()).await.unwrap();
    assert_eq!(storage.list_children("L").await.unwrap(), ["a", "b"]);
    assert_eq!(storage.list_children("L/a").await.unwrap(), ["240p", "master.m3u8"]);
    assert!(storage.list_children("nothing").await.unwrap().is_empty());
    assert!(matches!(storage.get_bytes("L/zzz").await, Err(vidpipe::publish::StorageError::NotFound(_))));

    storage.delete_prefix("L").await.unwrap();
    assert_eq!(server.objects().await, ["vod/L2/a/master.m3u8", "vod/Lx/a/master.m3u8"]);
    storage.delete_prefix("L").await.expect("deleting nothing is fine");
}

#[tokio::test]
async fn the_start_up_check_says_what_is_wrong() {
    let Some(server) = S3Server::start() else { return };
    S3Storage::new(server.config("vod"), "").unwrap().check().await.expect("good settings pass");
    assert!(server.objects().await.is_empty(), "the check cleans up after itself");

    let wrong_secret =
        S3Storage::new(S3Config { secret_access_key: Some("wrong".into()), ..server.config("") }, "").unwrap();
    let e = wrong_secret.check().await.unwrap_err().to_string();
    assert!(
        e.contains("refused the credentials") && e.contains("AWS_SECRET_ACCESS_KEY") && e.contains(&server.endpoint()),
        "{e}"
    );

    let no_bucket = S3Storage::new(S3Config { bucket: "missing".into(), ..server.config("") }, "").unwrap();
    let e = no_bucket.check().await.unwrap_err().to_string();
    assert!(e.contains("bucket `missing` does not exist"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");

    let mut down = server;
    down.stop();
    let started = Instant::now();
    let e = S3Storage::new(down.config(""), "").unwrap().check().await.unwrap_err().to_string();
    assert!(e.contains("unreachable") && e.contains("AWS_ENDPOINT_URL") && e.contains(&down.endpoint()), "{e}");
    // The check's requests time out after 3 s; 2 s more is this 2-core machine's allowance.
    assert!(started.elapsed() < Duration::from_secs(5), "the check answers fast: {:?}", started.elapsed());
}

#[tokio::test]
async fn an_unreachable_store_fails_after_the_retry_budget_naming_endpoint_and_error() {
    let Some(mut server) = S3Server::start() else { return };
    server.stop();
    let storage = S3Storage::new(S3Config { retry_budget: Duration::from_secs(2), ..server.config("") }, "").unwrap();
    let started = Instant::now();
    let e = storage.put_bytes("L/a/master.m3u8", b"x".to_vec()).await.unwrap_err().to_string();
    let took = started.elapsed();
    // It retries for a while (over 1 s), and gives up before a retry would
    // overrun the 2 s budget: 2 s, with 1.5 s allowance.
    assert!(took >= Duration::from_secs(1) && took < Duration::from_millis(3500), "bounded by the budget: {took:?}");
    assert!(e.contains(&server.endpoint()) && e.contains("L/a/master.m3u8") && e.contains("attempt"), "{e}");
    eprintln!("error after {took:?}: {e}");
}
