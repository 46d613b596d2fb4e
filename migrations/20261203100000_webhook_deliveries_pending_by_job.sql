-- Whether a job still waits for a webhook: the janitor asks it of every
-- finished job whose files are not deleted yet, on every pass, and the
-- worker of each job it delivers. Through webhook_deliveries_job that read
-- the job's deliveries one by one until a pending one (most of a ZIP's
-- thousand when only a few are left to retry); this index holds the
-- pending ones alone.
CREATE INDEX webhook_deliveries_pending_job ON webhook_deliveries (job_id) WHERE state = 'pending';
