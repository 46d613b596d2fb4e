-- no-transaction
-- A template's jobs, newest first: the job list's `template_id` filter.
-- Through jobs_account_created it read the account's jobs one by one until
-- a page of the template's, all of them for a template rarely used. A
-- template belongs to one account, so the account need not lead; the
-- listing still checks it. Its cost: an entry per row version of a job
-- (a status change writes a new row to every index, this one included).
CREATE INDEX CONCURRENTLY jobs_by_template ON jobs (template_id, created_at DESC, id DESC);
