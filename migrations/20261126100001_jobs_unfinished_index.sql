-- Queue depth by status is read on every metrics scrape: keep it an index scan.
CREATE INDEX jobs_unfinished ON jobs (status, created_at) WHERE finished_at IS NULL;
