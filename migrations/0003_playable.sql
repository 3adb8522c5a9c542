-- Storage prefix of the attempt whose early output (master + EVENT playlists)
-- is playable while the job still runs.
ALTER TABLE lectures ADD COLUMN playable_prefix TEXT;
