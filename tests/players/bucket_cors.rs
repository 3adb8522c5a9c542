//! The bucket CORS check and rule (`startup::bucket_playback`), against
//! s3s-fs (no bucket CORS at all) and against [`BucketFront`] (a store
//! that keeps CORS rules, like AWS S3 and R2).

use std::time::Duration;

use vidpipe::config::StorageConfig;
use vidpipe::publish::s3::S3Config;
use vidpipe::publish::S3Storage;

use crate::bucket_front::BucketFront;
use crate::helpers::test_config;
use crate::server::S3Server;

async fn playback(s3: S3Config, api_origins: &[&str]) -> Result<String, String> {
    playback_as(s3, api_origins, true).await
}

/// `apply`: as the API starts (puts the rule); without: as a worker or doctor.
async fn playback_as(s3: S3Config, api_origins: &[&str], apply: bool) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path());
    config.access.cors_origins = api_origins.iter().map(|o| o.to_string()).collect();
    config.storage = StorageConfig::S3(Box::new(s3.clone()));
    let storage = S3Storage::new(s3, "http://127.0.0.1:1").unwrap();
    vidpipe::startup::bucket_playback(&config, &storage, apply).await
}

#[tokio::test]
async fn a_bucket_browsers_cannot_play_from_is_named_with_the_fix() {
    let Some(server) = S3Server::start() else { return };
    let signed = |mut s3: S3Config| {
        s3.signed_url_ttl = Some(Duration::from_secs(60));
        s3
    };

    // Private bucket, signed links: the objects load, without CORS headers.
    let err = playback(signed(server.config("vod")), &["https://school.example"]).await.unwrap_err();
    assert!(err.contains("`Origin: https://school.example` came back without Access-Control-Allow-Origin"), "{err}");
    assert!(err.contains("VIDPIPE_S3_CORS_ORIGINS=https://school.example"), "{err}");
    assert!(err.contains("MINIO_API_CORS_ALLOW_ORIGIN=https://school.example"), "the store here is not AWS: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");

    // With no origin configured, the fix names none it made up.
    let err = playback(signed(server.config("vod")), &[]).await.unwrap_err();
    assert!(err.contains("VIDPIPE_S3_CORS_ORIGINS=<your site's origin, or *> and"), "{err}");

    // Public links to a bucket that is not public.
    let err = playback(server.config("vod"), &[]).await.unwrap_err();
    assert!(err.contains("players get 403") && err.contains("publicly readable"), "{err}");

    // Asked to set a rule on a store without PutBucketCors: said so, with what to do instead.
    let mut s3 = signed(server.config("vod"));
    s3.cors_origins = vec!["https://school.example".into()];
    let err = playback(s3, &[]).await.unwrap_err();
    assert!(err.contains("VIDPIPE_S3_CORS_ORIGINS not applied: the store does not support GetBucketCors"), "{err}");
    assert!(err.contains("MINIO_API_CORS_ALLOW_ORIGIN"), "{err}");

    // No probe object is left behind by any of the checks.
    assert!(server.objects().await.is_empty(), "{:?}", server.objects().await);
}

#[tokio::test]
async fn the_rule_is_put_on_a_store_that_keeps_rules_and_then_the_check_passes() {
    let Some(server) = S3Server::start() else { return };
    let front = BucketFront::start(&server, true).await;
    let mut s3 = server.config("vod");
    s3.endpoint = Some(front.endpoint());

    let err = playback(s3.clone(), &[]).await.unwrap_err();
    assert!(err.contains("without Access-Control-Allow-Origin"), "public, but no CORS yet: {err}");
    assert!(front.cors_configuration().is_none());

    // The bucket calls are signed for real: a wrong secret is refused, and
    // a refusal is not mistaken for a store without the call.
    let wrong =
        S3Config { secret_access_key: Some("not-the-secret".into()), cors_origins: vec!["*".into()], ..s3.clone() };
    let err = playback(wrong, &[]).await.unwrap_err();
    assert!(err.contains("GetBucketCors was refused (403 SignatureDoesNotMatch)"), "{err}");
    assert!(front.cors_configuration().is_none());

    s3.cors_origins = vec!["https://school.example".into(), "https://app.example".into()];
    // A worker (or doctor) only looks: the bucket is left as it is.
    let err = playback_as(s3.clone(), &[], false).await.unwrap_err();
    assert!(err.contains("without Access-Control-Allow-Origin") && !err.contains("CORS rule"), "{err}");
    assert!(front.cors_configuration().is_none(), "a check changed the bucket");
    let ok = playback(s3.clone(), &[]).await.unwrap();
    assert!(ok.contains("CORS rule `vidpipe-playback` set for https://school.example, https://app.example"), "{ok}");
    assert!(ok.contains("browsers on https://school.example can play from the bucket"), "{ok}");
    let rule = front.cors_configuration().unwrap();
    assert!(rule.contains("<AllowedOrigin>https://app.example</AllowedOrigin>"), "{rule}");

    // An origin the rule does not name is still refused, and said so.
    s3.cors_origins.clear();
    let err = playback(s3.clone(), &["https://elsewhere.example"]).await.unwrap_err();
    assert!(err.contains("`Origin: https://elsewhere.example` came back without"), "{err}");

    // Set again: one rule of ours, not two.
    s3.cors_origins = vec!["*".into()];
    playback(s3, &[]).await.unwrap();
    let rule = front.cors_configuration().unwrap();
    assert_eq!(rule.matches("<ID>vidpipe-playback</ID>").count(), 1, "{rule}");
    assert!(!rule.contains("school.example"), "{rule}");
}
