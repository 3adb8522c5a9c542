//! vidpipe publishing to S3, against a real S3 server (s3s-fs) on loopback:
//! the backend on its own (`storage`) and the whole service (`e2e`),
//! including outages and refused credentials.
//!
//! Run with `cargo test --test s3`; `-- --nocapture` shows the timings.

mod e2e;
#[path = "../e2e/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;
mod server;
mod storage;
