//! What a viewer sees: real web players (hls.js and Shaka Player) in
//! headless Chromium, playing vidpipe's output from every storage mode
//! (local disk, public S3 bucket, private bucket with signed links), for a
//! finished lecture and one still processing (`matrix`); and the bucket CORS
//! check and rule that make S3 playable in a browser at all (`bucket_cors`);
//! and vidpipe's own upload, watch and dashboard pages (`pages`).
//!
//! Needs Chromium (`/usr/bin/chromium`, or `VIDPIPE_TEST_CHROMIUM`), Node.js
//! and `tests/browser/node_modules` (`npm ci --prefix tests/browser`), and
//! s3s-fs for the S3 cells; `.ci/run` installs all of them. Outside CI a
//! missing piece skips the test with a loud message.
//!
//! Run with `cargo test --test players -- --nocapture` to see each report.

mod bucket_cors;
mod bucket_front;
#[path = "../e2e/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;
mod matrix;
mod pages;
#[path = "../s3/server.rs"]
#[allow(dead_code)]
mod server;
