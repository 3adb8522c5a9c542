-- Enqueue order, to break ties within a priority: created_at has millisecond
-- resolution, and jobs enqueued in the same millisecond must still be
-- claimed first in, first out (the Redis queue keeps the same sequence).
ALTER TABLE jobs ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
UPDATE jobs SET seq = created_at;
CREATE INDEX jobs_fifo_order ON jobs (state, priority, seq, id);
