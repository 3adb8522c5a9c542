-- Caption tracks: one per lecture and language, as normalised WebVTT (at
-- most 1 MiB). `revision` counts rewrites; `published_prefix` is the attempt
-- prefix the current revision is published under.
CREATE TABLE captions (
    lecture_id       TEXT NOT NULL REFERENCES lectures (id) ON DELETE CASCADE,
    language         TEXT NOT NULL,
    label            TEXT NOT NULL,
    origin           TEXT NOT NULL,
    vtt              TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    published_prefix TEXT,
    updated_at       BIGINT NOT NULL,
    PRIMARY KEY (lecture_id, language)
);
-- What the lecture document lists: the tracks published with its video.
ALTER TABLE lectures ADD COLUMN captions TEXT NOT NULL DEFAULT '[]';
-- Seek previews (storyboard.jpg + storyboard.vtt) were published.
ALTER TABLE lectures ADD COLUMN has_storyboard BIGINT NOT NULL DEFAULT 0;
-- The thumbnail's time: asked for at upload, then the one taken.
ALTER TABLE lectures ADD COLUMN thumbnail_request DOUBLE PRECISION;
ALTER TABLE lectures ADD COLUMN thumbnail_time DOUBLE PRECISION;
ALTER TABLE uploads ADD COLUMN thumbnail_time DOUBLE PRECISION;
ALTER TABLE direct_uploads ADD COLUMN thumbnail_time DOUBLE PRECISION;
