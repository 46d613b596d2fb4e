-- The janitor looks for finished jobs whose stored files are not yet deleted
-- (left over by a worker that stopped midway) on every pass: few rows, keep
-- it an index scan.
CREATE INDEX jobs_files_pending ON jobs (finished_at)
    WHERE finished_at IS NOT NULL AND file_deleted_at IS NULL;
