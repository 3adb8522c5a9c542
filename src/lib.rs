//! vidpipe: upload a video, get an HLS adaptive-bitrate ladder.
//!
//! # Layout
//! The modules follow the data:
//! - [`ingest`]: multipart upload streamed to disk, probed and validated.
//! - [`queue`]: the durable job queue (leases, retries, priorities).
//! - [`worker`]: claims jobs, supervises attempts, shuts down cleanly.
//! - [`transcode`]: probe result → plan → one ffmpeg run → HLS files.
//! - [`publish`]: ships finished files to storage while ffmpeg runs.
//! - [`status`]: what clients read: the lecture document and the job view.
//!
//! Beside them: [`media`] (what a media file is: the facts `ingest` learns
//! and `transcode` plans from), [`tools`] (the ffmpeg binaries, checked, and
//! how they are started), [`domain`] (types that cannot hold invalid values),
//! [`lectures`] (lecture records), [`keys`] (API keys and scopes), [`db`]
//! (SQLite/PostgreSQL), [`http`] (routes, access control, limits and the API
//! error type), [`redact`] (what clients may see of an error), [`config`]
//! (flags and env vars) and [`startup`] (wiring), [`operator`] (`vidpipe
//! queue|lectures|keys|doctor`).

pub mod alerts;
pub mod captions;
pub mod config;
pub mod db;
pub mod domain;
pub mod events;
pub mod housekeeping;
pub mod http;
pub mod ingest;
pub mod keys;
pub mod lectures;
pub mod media;
pub mod metrics;
pub mod operator;
pub mod publish;
pub mod queue;
pub mod redact;
pub mod startup;
pub mod status;
pub mod tools;
pub mod transcode;
pub mod worker;
