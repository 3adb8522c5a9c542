-- Resumable (tus) uploads in progress. The bytes live in
-- <data-dir>/uploads/partial/<id>; `received` is how many of them are
-- durable. `writer` leases the upload to one request at a time, across
-- processes. The lecture an upload becomes has the upload's id.
CREATE TABLE uploads (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    length BIGINT NOT NULL,
    received BIGINT NOT NULL DEFAULT 0,
    metadata TEXT NOT NULL,
    course_id TEXT NOT NULL,
    name_of_topic TEXT NOT NULL,
    filename TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    writer TEXT,
    writer_until BIGINT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lecture_id TEXT
);

CREATE INDEX uploads_expires_at ON uploads (expires_at);
