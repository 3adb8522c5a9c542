-- One schema for SQLite and PostgreSQL: only types both understand.
-- Lectures: what the API shows. Status, progress and errors live on the job
-- (same id), so the two can never disagree.
CREATE TABLE lectures (
    id                TEXT PRIMARY KEY,
    course_id         TEXT NOT NULL,
    name_of_topic     TEXT NOT NULL,
    source_path       TEXT NOT NULL,
    original_filename TEXT,
    published_prefix  TEXT,
    has_thumbnail     BIGINT NOT NULL DEFAULT 0,
    renditions        TEXT NOT NULL DEFAULT '[]',
    duration_seconds  DOUBLE PRECISION,
    no_of_views       BIGINT NOT NULL DEFAULT 0,
    no_of_likes       BIGINT NOT NULL DEFAULT 0,
    comments          TEXT NOT NULL DEFAULT '[]',
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
);
CREATE INDEX lectures_by_course ON lectures (course_id, created_at);
CREATE INDEX lectures_by_time ON lectures (created_at);

-- Jobs: the durable queue. Times are milliseconds since the epoch.
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    priority     BIGINT NOT NULL DEFAULT 0,
    attempts     BIGINT NOT NULL DEFAULT 0,
    max_attempts BIGINT NOT NULL,
    run_at       BIGINT NOT NULL,
    lease_token  TEXT,
    lease_until  BIGINT,
    worker_id    TEXT,
    progress     DOUBLE PRECISION NOT NULL DEFAULT 0,
    last_error   TEXT,
    errors       TEXT NOT NULL DEFAULT '[]',
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT
);
CREATE INDEX jobs_claim_order ON jobs (state, priority, created_at, id);
CREATE INDEX jobs_lease ON jobs (state, lease_until);

CREATE TABLE queue_flags (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
