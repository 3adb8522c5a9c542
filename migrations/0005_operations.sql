-- Everything that happens to a lecture, in order: the outbox that server-sent
-- events and webhooks read. `seq` is assigned MAX+1 under a table lock, so
-- events become visible in `seq` order and a reader that resumes after a
-- seq misses nothing.
CREATE TABLE events (
    seq        BIGINT PRIMARY KEY,
    kind       TEXT NOT NULL,
    lecture_id TEXT,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX events_by_lecture ON events (lecture_id, seq);
CREATE INDEX events_by_time ON events (created_at);

-- One row per event and webhook URL, until delivered or dead.
CREATE TABLE webhook_deliveries (
    event_seq       BIGINT NOT NULL,
    url             TEXT NOT NULL,
    lecture_id      TEXT,
    state           TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    PRIMARY KEY (event_seq, url)
);
CREATE INDEX deliveries_due ON webhook_deliveries (state, next_attempt_at);

-- How far a reader (the webhook dispatcher) has read the events.
CREATE TABLE cursors (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Alert rules and whether each is firing now, shared by every process so an
-- alert fires (and resolves) once however many processes evaluate it.
CREATE TABLE alerts (
    name   TEXT PRIMARY KEY,
    firing BIGINT NOT NULL DEFAULT 0,
    since  BIGINT,
    detail TEXT
);

-- Worker processes, each renewing its row while it runs.
CREATE TABLE workers (
    id          TEXT PRIMARY KEY,
    concurrency BIGINT NOT NULL,
    active      BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);

-- Leases on periodic chores (the scheduled cleanup), one holder at a time.
CREATE TABLE locks (
    name   TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until  BIGINT NOT NULL
);
