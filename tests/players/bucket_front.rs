//! A front for the test S3 server (s3s-fs) with the two bucket features a
//! browser needs and s3s-fs lacks:
//! - bucket CORS: `GET/PUT ?cors` are first sent to s3s-fs, so a wrong
//!   signature is still refused there; when s3s-fs answers NotImplemented
//!   the front keeps the configuration itself, and from then on adds
//!   `Access-Control-Allow-Origin` to answers for origins the rules allow,
//!   as AWS S3 and R2 do. Without a configuration it adds none;
//! - with `public_read`, anonymous GETs are served (a public-read bucket
//!   policy), fetched from s3s-fs with the test's own credentials.
//!
//! Everything else is forwarded as it is, `Host` included, so SigV4
//! signatures made for the front's address stay valid at s3s-fs.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use object_store::ObjectStoreExt;

use crate::server::{S3Server, BUCKET};

#[derive(Clone)]
struct Front {
    upstream: String,
    client: reqwest::Client,
    store: Arc<object_store::aws::AmazonS3>,
    public_read: bool,
    /// The bucket's CORS configuration (XML), once a client put one.
    cors: Arc<Mutex<Option<String>>>,
}

pub struct BucketFront {
    pub port: u16,
    cors: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BucketFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BucketFront {
    pub async fn start(server: &S3Server, public_read: bool) -> BucketFront {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cors = Arc::new(Mutex::new(None));
        let front = Front {
            upstream: server.endpoint(),
            client: reqwest::Client::new(),
            store: Arc::new(server.client()),
            public_read,
            cors: cors.clone(),
        };
        let app = axum::Router::new().fallback(handle).with_state(front);
        let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        BucketFront { port, cors, task }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The CORS configuration a client put on the bucket, if any.
    pub fn cors_configuration(&self) -> Option<String> {
        self.cors.lock().unwrap().clone()
    }
}

async fn handle(State(front): State<Front>, request: Request) -> Response {
    let origin = request.headers().get("origin").cloned();
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_default();
    let is_cors_call = request.uri().query().is_some_and(|q| q.split('&').any(|p| p == "cors" || p == "cors="));
    let anonymous = !request.headers().contains_key("authorization") && !path_and_query.contains("X-Amz-Signature=");
    let (method, headers) = (request.method().clone(), request.headers().clone());
    let body = axum::body::to_bytes(request.into_body(), 64 << 20).await.unwrap_or_default();

    let mut response = if method == Method::OPTIONS {
        Response::builder().status(StatusCode::NO_CONTENT).body(Body::empty()).unwrap()
    } else if anonymous && front.public_read && method == Method::GET {
        public_get(&front, &path_and_query).await
    } else {
        let upstream = forward(&front, &method, &path_and_query, &headers, body.to_vec()).await;
        if is_cors_call && upstream.status() == StatusCode::NOT_IMPLEMENTED {
            // s3s-fs accepted the signature but has no bucket CORS: keep it here.
            cors_call(&front, &method, &body)
        } else {
            upstream
        }
    };
    if let Some(origin) = origin.filter(|o| allowed(front.cors.lock().unwrap().as_deref(), o)) {
        let h = response.headers_mut();
        h.insert("access-control-allow-origin", origin);
        h.insert("access-control-allow-methods", HeaderValue::from_static("GET, HEAD"));
        h.insert("access-control-allow-headers", HeaderValue::from_static("Range"));
        h.insert("vary", HeaderValue::from_static("Origin"));
    }
    response
}

/// Whether the stored rules allow `origin` (an `*` rule or the exact name).
fn allowed(configuration: Option<&str>, origin: &HeaderValue) -> bool {
    let Some(xml) = configuration else { return false };
    let origin = origin.to_str().unwrap_or_default();
    xml.split("<AllowedOrigin>")
        .skip(1)
        .filter_map(|rest| rest.split("</AllowedOrigin>").next())
        .any(|o| o == "*" || o == origin)
}

fn cors_call(front: &Front, method: &Method, body: &[u8]) -> Response {
    let mut stored = front.cors.lock().unwrap();
    if *method == Method::PUT {
        *stored = Some(String::from_utf8_lossy(body).into_owned());
        return Response::builder().status(StatusCode::OK).body(Body::empty()).unwrap();
    }
    match stored.clone() {
        Some(xml) => Response::builder().status(StatusCode::OK).body(Body::from(xml)).unwrap(),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Body::from("<Error><Code>NoSuchCORSConfiguration</Code></Error>"))
            .unwrap(),
    }
}

async fn public_get(front: &Front, path_and_query: &str) -> Response {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let Some(key) = path.strip_prefix(&format!("/{BUCKET}/")) else {
        return Response::builder().status(StatusCode::FORBIDDEN).body(Body::empty()).unwrap();
    };
    match front.store.get(&key.into()).await {
        Ok(got) => {
            let content_type = got
                .attributes
                .get(&object_store::Attribute::ContentType)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "application/octet-stream".into());
            let bytes = got.bytes().await.unwrap_or_default();
            Response::builder().header("content-type", content_type).body(Body::from(bytes)).unwrap()
        }
        Err(_) => Response::builder().status(StatusCode::NOT_FOUND).body(Body::empty()).unwrap(),
    }
}

async fn forward(front: &Front, method: &Method, path_and_query: &str, headers: &HeaderMap, body: Vec<u8>) -> Response {
    let mut request = front.client.request(method.clone(), format!("{}{path_and_query}", front.upstream));
    for (name, value) in headers {
        if !matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection") {
            request = request.header(name, value);
        }
    }
    let upstream = match request.body(body).send().await {
        Ok(r) => r,
        Err(e) => return Response::builder().status(StatusCode::BAD_GATEWAY).body(Body::from(e.to_string())).unwrap(),
    };
    let mut response = Response::builder().status(upstream.status());
    for (name, value) in upstream.headers() {
        // A HEAD answer's length is the object's; any other is the body's.
        let length_of_body = name.as_str() == "content-length" && method != Method::HEAD;
        if !length_of_body && !matches!(name.as_str(), "transfer-encoding" | "connection") {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(upstream.bytes().await.unwrap_or_default())).unwrap()
}
