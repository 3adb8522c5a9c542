-- A lecture's final failure, kept with the lecture so it survives the job
-- record (cleaned after 7 days, or lost with a Redis queue's data).
ALTER TABLE lectures ADD COLUMN failed_error TEXT;
