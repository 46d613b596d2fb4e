-- Per-API-key rate limit (GCRA): the key's theoretical arrival time, pushed
-- forward by 1/rate on every request it lets through. All API processes share
-- it here. It is written with synchronous_commit off (losing its last moments
-- in a crash only forgets some throttling), and room is left on each page so
-- the updates stay HOT (rate_tat and last_used_at are not indexed).
ALTER TABLE api_keys ADD COLUMN rate_tat timestamptz;
ALTER TABLE api_keys SET (fillfactor = 50);
