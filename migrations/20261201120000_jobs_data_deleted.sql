-- DELETE /v1/jobs/{id}: the job's files, results, webhook payloads and
-- static values were deleted on request at this time (the row stays, with
-- its status and charges).
ALTER TABLE jobs ADD COLUMN data_deleted_at timestamptz;
