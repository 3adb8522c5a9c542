//! Can a browser play from the bucket? CORS for S3-compatible stores.
//!
//! A web player (hls.js, Shaka, video.js) fetches every segment with
//! `fetch`/XHR from the page's origin. With S3 storage the segments come
//! from the bucket (public links, or presigned ones in signed mode), and a
//! bucket without a CORS rule answers without `Access-Control-Allow-Origin`:
//! every segment fails (with signed links the playlists still load: the
//! API sends CORS headers; with public links they fail first). Nothing
//! else in the system notices, so:
//! - [`check`] fetches a freshly written object the way a browser would
//!   (with an `Origin` header, through the link players get) and says in
//!   one line what is wrong and how to fix it on the store at hand;
//! - [`apply`] puts a rule on the bucket (`PutBucketCors`), when the
//!   operator opts in with `VIDPIPE_S3_CORS_ORIGINS`. It keeps the bucket's
//!   other rules and replaces only its own (ID [`RULE_ID`]). Stores without
//!   the call (MinIO has a server setting instead) are told apart from
//!   refusals, so the message says which fix applies.
//!
//! `object_store` has no bucket-level calls: [`apply`] goes through
//! [`S3Storage::bucket_request`], which signs with `object_store`'s own
//! SigV4 authorizer and credentials.

use std::time::Duration;

use axum::http::Method;

use super::s3::S3Storage;

/// The ID of the rule vidpipe manages; other rules are left as they are.
pub const RULE_ID: &str = "vidpipe-playback";

/// The origin a check sends when no origin is configured: any name works
/// for a rule that allows `*`, which is what a public video bucket usually has.
pub const DEFAULT_CHECK_ORIGIN: &str = "https://vidpipe-cors-check.example";

/// What [`check`] found wrong: one line, with the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsProblem(pub String);

impl std::fmt::Display for CorsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Fetches a probe object through the link a player would get (public or
/// presigned) with `Origin: origin`, and reports what would stop a browser:
/// no CORS header for that origin, or (public links) a bucket that is not
/// publicly readable. The probe object is removed again.
pub async fn check(storage: &S3Storage, origin: &str) -> Result<(), CorsProblem> {
    let key = format!(".vidpipe-cors-check-{}", uuid::Uuid::new_v4().simple());
    let problem = |what: String| CorsProblem(format!("S3 bucket `{}`: {what}", storage.config().bucket));
    storage.put_probe(&key).await.map_err(|e| problem(format!("could not write a CORS probe object: {e}")))?;
    let result = async {
        let url = storage.player_url(&key).await.map_err(|e| problem(e.to_string()))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| problem(e.to_string()))?;
        let response = client
            .get(&url)
            .header("origin", origin)
            .send()
            .await
            // `without_url`: the error text would carry the presigned query.
            .map_err(|e| {
                problem(format!(
                    "could not GET {} from here to check CORS ({}); if only viewers reach that address \
                     (VIDPIPE_S3_PUBLIC_ENDPOINT), check from a browser",
                    without_query(&url),
                    e.without_url()
                ))
            })?;
        let status = response.status();
        if !status.is_success() {
            let fix = if storage.config().signed_url_ttl.is_some() {
                "check the key's s3:GetObject permission".to_string()
            } else {
                "make the bucket publicly readable (a bucket policy allowing s3:GetObject), or keep it private and set VIDPIPE_SIGNED_URL_TTL".to_string()
            };
            return Err(problem(format!(
                "players get {status} for {} (the link players get): {fix}",
                without_query(&url)
            )));
        }
        let allowed = response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok());
        match allowed {
            Some("*") => Ok(()),
            Some(o) if o == origin => Ok(()),
            other => Err(problem(format!(
                "a GET with `Origin: {origin}` came back {}, so browsers cannot play from it (hls.js: fragLoadError): {}",
                match other {
                    None => "without Access-Control-Allow-Origin".to_string(),
                    Some(o) => format!("allowing only `{o}`"),
                },
                fix_for(storage.config().endpoint.as_deref(), origin_to_allow(origin))
            ))),
        }
    }
    .await;
    let _ = storage.delete_probe(&key).await;
    result
}

/// How to add the rule on the store at `endpoint` (`None`: AWS).
fn fix_for(endpoint: Option<&str>, origin: &str) -> String {
    let host = endpoint.unwrap_or("amazonaws.com");
    let store_way = if host.contains("amazonaws.com") {
        format!("`aws s3api put-bucket-cors` with AllowedOrigins [\"{origin}\"], AllowedMethods [GET, HEAD]")
    } else if host.contains("r2.cloudflarestorage.com") {
        format!("a CORS policy in the R2 bucket's settings allowing GET and HEAD from {origin}")
    } else if host.contains("storage.googleapis.com") {
        format!("`gsutil cors set` with origin [\"{origin}\"] and method [GET, HEAD]")
    } else {
        format!("on MinIO, start the server with MINIO_API_CORS_ALLOW_ORIGIN={origin}")
    };
    format!(
        "set VIDPIPE_S3_CORS_ORIGINS={origin} and vidpipe puts the rule on the bucket, or add it yourself: {store_way}"
    )
}

/// The origin to name in a fix: the one checked, or a placeholder when the
/// check used [`DEFAULT_CHECK_ORIGIN`] because none is configured.
fn origin_to_allow(checked: &str) -> &str {
    if checked == DEFAULT_CHECK_ORIGIN {
        "<your site's origin, or *>"
    } else {
        checked
    }
}

fn without_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// What [`apply`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// The bucket now has the rule (other rules kept).
    Set,
    /// The store has no `PutBucketCors` (e.g. MinIO, s3s-fs): the message
    /// says what to do instead.
    Unsupported(String),
}

/// Puts vidpipe's rule (GET and HEAD from `origins`, `Range` allowed) on
/// the bucket, keeping its other rules. An error is a refusal or a failure
/// the operator must look at; a store without the call is [`Applied::Unsupported`].
pub async fn apply(storage: &S3Storage, origins: &[String]) -> Result<Applied, String> {
    let config = storage.config();
    let current = match storage.bucket_request(Method::GET, "cors", Vec::new()).await? {
        (200, body) => body,
        // No configuration yet.
        (404, _) => String::new(),
        (status, body) => return unsupported_or_error(status, &body, "GetBucketCors", config.endpoint.as_deref()),
    };
    let document = with_rule(&current, origins);
    match storage.bucket_request(Method::PUT, "cors", document.into_bytes()).await? {
        (200 | 204, _) => Ok(Applied::Set),
        (status, body) => unsupported_or_error(status, &body, "PutBucketCors", config.endpoint.as_deref()),
    }
}

fn unsupported_or_error(status: u16, body: &str, call: &str, endpoint: Option<&str>) -> Result<Applied, String> {
    let code = super::s3::s3_code(body).unwrap_or_default();
    if status == 501 || code == "NotImplemented" {
        let instead = fix_for(endpoint, "<origin>");
        let instead = instead.split_once("add it yourself: ").map_or(instead.as_str(), |(_, way)| way).to_string();
        return Ok(Applied::Unsupported(format!(
            "the store does not support {call}: configure CORS there instead ({instead})"
        )));
    }
    Err(format!(
        "{call} was refused ({status} {code}): the key needs the s3:PutBucketCORS and s3:GetBucketCORS permissions"
    ))
}

/// The bucket's CORS configuration with vidpipe's rule in place of any
/// earlier one of ours, after every other rule, kept byte for byte.
pub fn with_rule(current: &str, origins: &[String]) -> String {
    let mut out = String::from("<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    let mut rest = current;
    while let Some(start) = rest.find("<CORSRule>") {
        let Some(len) = rest[start..].find("</CORSRule>") else { break };
        let rule = &rest[start..start + len + "</CORSRule>".len()];
        if !rule.contains(&format!("<ID>{RULE_ID}</ID>")) {
            out.push_str(rule);
        }
        rest = &rest[start + rule.len()..];
    }
    out.push_str(&format!("<CORSRule><ID>{RULE_ID}</ID>"));
    for origin in origins {
        out.push_str(&format!("<AllowedOrigin>{}</AllowedOrigin>", xml_escape(origin)));
    }
    out.push_str("<AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod>");
    out.push_str("<AllowedHeader>Range</AllowedHeader><ExposeHeader>Content-Length</ExposeHeader>");
    out.push_str("<ExposeHeader>Content-Range</ExposeHeader><MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule>");
    out.push_str("</CORSConfiguration>");
    out
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_rule_replaces_its_earlier_self_and_keeps_the_others() {
        let theirs =
            "<CORSRule><AllowedOrigin>https://a.example</AllowedOrigin><AllowedMethod>PUT</AllowedMethod></CORSRule>";
        let current = format!("<?xml version=\"1.0\"?><CORSConfiguration>{theirs}</CORSConfiguration>");
        let once = with_rule(&current, &["https://school.example".into()]);
        assert!(once.contains(theirs), "{once}");
        assert!(once.contains("<AllowedOrigin>https://school.example</AllowedOrigin>"), "{once}");
        let twice = with_rule(&once, &["*".into()]);
        assert_eq!(twice.matches("<CORSRule>").count(), 2, "{twice}");
        assert!(twice.contains("<AllowedOrigin>*</AllowedOrigin>") && !twice.contains("school"), "{twice}");
        assert!(with_rule("", &["*".into()]).starts_with("<CORSConfiguration xmlns="));
    }

    #[test]
    fn the_fix_names_the_store_at_hand() {
        let o = "https://school.example";
        assert!(fix_for(None, o).contains("aws s3api put-bucket-cors"));
        assert!(fix_for(Some("https://acc.r2.cloudflarestorage.com"), o).contains("R2"));
        assert!(
            fix_for(Some("http://127.0.0.1:9000"), o).contains("MINIO_API_CORS_ALLOW_ORIGIN=https://school.example")
        );
        assert!(
            fix_for(Some("http://127.0.0.1:9000"), o).starts_with("set VIDPIPE_S3_CORS_ORIGINS=https://school.example")
        );
    }
}
