//! End-to-end tests: the real server, real ffmpeg, real SQLite.

mod captions;
mod chunked;
mod colour;
mod direct;
mod helpers;
mod ladder;
mod lifecycle;
mod openapi;
mod operations;
mod operator;
mod previews;
mod progressive;
mod rejections;
mod reliability;
mod resumable;
mod security;
