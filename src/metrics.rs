//! Prometheus metrics: every name in one place, recorded through the
//! `metrics` facade and rendered by `metrics-exporter-prometheus`.
//!
//! Counters and histograms are per process (scrape each `api` and `worker`,
//! the latter through `VIDPIPE_METRICS_LISTEN`). Queue-wide figures (jobs by
//! state, alerts firing) are read from the queue and the database at scrape
//! time, so any one process reports the truth.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Seconds, from a fast HTTP answer to a long lecture.
const SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.025, 0.1, 0.25, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0];
/// Encode speed, as a multiple of real time.
const SPEED_BUCKETS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Installs the recorder (once per process) and returns its handle.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("vidpipe_encode_speed_ratio".into()), SPEED_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::debug!("a metrics recorder was already installed");
        }
        gauge!("vidpipe_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// The exposition text (after [`install`]).
pub fn render() -> String {
    install().render()
}

pub fn jobs_in_state(state: &'static str, count: u64) {
    gauge!("vidpipe_jobs", "state" => state).set(count as f64);
}

pub fn alert_firing(alert: &'static str, firing: bool) {
    gauge!("vidpipe_alert_firing", "alert" => alert).set(if firing { 1.0 } else { 0.0 });
}

pub fn job_completed(attempt: Duration, upload_to_completed: Duration, speed: Option<f64>) {
    counter!("vidpipe_jobs_completed_total").increment(1);
    histogram!("vidpipe_job_duration_seconds", "outcome" => "completed").record(attempt.as_secs_f64());
    histogram!("vidpipe_upload_to_completed_seconds").record(upload_to_completed.as_secs_f64());
    if let Some(speed) = speed {
        histogram!("vidpipe_encode_speed_ratio").record(speed);
    }
}

/// A job that failed for good. `reason` is one of a fixed set
/// (`worker::job::failure_class`).
pub fn job_failed(reason: &'static str) {
    counter!("vidpipe_jobs_failed_total", "reason" => reason).increment(1);
}

/// Any failed attempt, retried or not.
pub fn attempt_failed(reason: &'static str, attempt: Duration) {
    counter!("vidpipe_attempts_failed_total", "reason" => reason).increment(1);
    histogram!("vidpipe_job_duration_seconds", "outcome" => "failed").record(attempt.as_secs_f64());
}

pub fn upload_to_playable(elapsed: Duration) {
    histogram!("vidpipe_upload_to_playable_seconds").record(elapsed.as_secs_f64());
}

pub fn uploaded_bytes(n: u64) {
    counter!("vidpipe_uploaded_bytes_total").increment(n);
}

pub fn published_bytes(n: u64) {
    counter!("vidpipe_published_bytes_total").increment(n);
}

pub fn storage_retry() {
    counter!("vidpipe_storage_retries_total").increment(1);
}

pub fn ffmpeg_started() {
    gauge!("vidpipe_ffmpeg_running").increment(1.0);
}

pub fn ffmpeg_ended() {
    gauge!("vidpipe_ffmpeg_running").decrement(1.0);
}

pub fn webhook_delivered(ok: bool) {
    counter!("vidpipe_webhook_attempts_total", "outcome" => if ok { "delivered" } else { "failed" }).increment(1);
}

/// `route` is the route template (`/api/lectures/{id}`), never a raw path.
pub fn http_request(route: String, method: String, status: u16, elapsed: Duration) {
    counter!("vidpipe_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.to_string())
        .increment(1);
    histogram!("vidpipe_http_request_duration_seconds", "route" => route, "method" => method)
        .record(elapsed.as_secs_f64());
}
