-- no-transaction
-- An account's failed jobs, newest first: the job list's `status=FAILED`
-- filter (the dashboard's "Failed" view). Through jobs_account_created it
-- read the account's jobs one by one until a page of failed ones, every
-- job of the account when few failed. Partial: only failed jobs' rows are
-- written to it, not every update of every job (a job's status changes
-- three times or more, and each change writes a new row to every index).
-- Other statuses need none: unfinished ones are few (jobs_unfinished), and
-- SUCCESS is most jobs, found at once in the account's order.
CREATE INDEX CONCURRENTLY jobs_failed_by_account ON jobs (account_id, created_at DESC, id DESC)
    WHERE status = 'FAILED';
