-- Small submitted documents (inline_document_max_bytes), kept with their
-- job instead of in the object store: the statement that inserts the job
-- writes its document too, in one durable commit. Read and deleted as
-- stored files are (storage keys starting with inline/); the janitor
-- deletes any left behind by a job whose files are deleted.
CREATE TABLE inline_documents (
    key text PRIMARY KEY,
    job_id uuid NOT NULL,
    data bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
