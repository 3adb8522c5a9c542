-- One-time upload URLs for browsers (`POST /api/direct-uploads`). The
-- secret in the URL is stored only as its SHA-256. `id` is the id of the
-- lecture the upload becomes; `used_at` is set by the one upload that
-- takes the URL (a plain POST when it commits, a tus upload when it is
-- created), so a URL makes at most one lecture.
CREATE TABLE direct_uploads (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    created_by TEXT,
    course_id TEXT NOT NULL,
    name_of_topic TEXT NOT NULL,
    filename TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    max_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE INDEX direct_uploads_expires_at ON direct_uploads (expires_at);
