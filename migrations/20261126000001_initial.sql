-- Paperhook schema. PostgreSQL is the queue and the single source of truth:
-- every API, worker and janitor process works only through these tables.

CREATE TABLE accounts (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    -- The balance is the only mutable credit figure; every change to it is
    -- written to credit_ledger in the same transaction.
    credits     bigint NOT NULL DEFAULT 0 CHECK (credits >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    account_id   uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    -- Public part of the key, shown in listings and used to find the row.
    prefix       text NOT NULL UNIQUE,
    -- SHA-256 of the whole key; the key itself is never stored.
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE templates (
    id                  uuid PRIMARY KEY,
    account_id          uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name                text NOT NULL,
    -- The extraction spec (fields, keywords, languages) as the extract crate defines it.
    spec                jsonb NOT NULL,
    webhook_url         text,
    -- AES-256-GCM ciphertexts (key id || nonce || ciphertext) of the custom
    -- headers (a JSON object) and of the whsec_ signing secret.
    webhook_headers_enc bytea,
    webhook_secret_enc  bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    -- Soft delete: jobs in flight keep their template; the API answers 404.
    deleted_at          timestamptz
);
CREATE INDEX templates_account ON templates (account_id, created_at DESC) WHERE deleted_at IS NULL;

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    template_id     uuid NOT NULL REFERENCES templates (id),
    -- One of the public status strings: NEW, UNZIPPING FILE, UNZIP FILE SUCCESS,
    -- UNZIP FILE FAILED, PROCESSING IMAGE, PROCESS IMAGE SUCCESS,
    -- PROCESS IMAGE FAILED, SUCCESS, FAILED.
    status          text NOT NULL DEFAULT 'NEW',
    -- pdf | png | jpeg | tiff | zip, detected from the bytes.
    content_type    text NOT NULL,
    file_name       text,
    size_bytes      bigint NOT NULL,
    storage_key     text NOT NULL,
    static_values   jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key text,
    error_code      text,
    error_message   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    file_deleted_at timestamptz,
    results_expired_at timestamptz
);
CREATE INDEX jobs_account_created ON jobs (account_id, created_at DESC);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (account_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL AND results_expired_at IS NULL;

-- One row per file to extract: a single-file job has one, a ZIP job one per entry.
CREATE TABLE documents (
    id            uuid PRIMARY KEY,
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx           int NOT NULL,
    file_name     text,
    content_type  text,
    storage_key   text,
    status        text NOT NULL DEFAULT 'NEW',
    pages         int,
    error_code    text,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    UNIQUE (job_id, idx)
);

CREATE TABLE results (
    document_id uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    job_id      uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    result      jsonb NOT NULL,
    -- Per-field page, box, confidence and source.
    meta        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX results_job ON results (job_id);

CREATE TABLE credit_ledger (
    id            bigserial PRIMARY KEY,
    account_id    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    delta         bigint NOT NULL,
    balance_after bigint NOT NULL CHECK (balance_after >= 0),
    -- grant | document
    reason        text NOT NULL,
    job_id        uuid,
    -- A document is charged at most once: the unique key makes a second
    -- charge fail inside its transaction.
    document_id   uuid UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_ledger_account ON credit_ledger (account_id, id DESC);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    -- The Standard Webhooks webhook-id, the same on every attempt.
    message_id      text NOT NULL UNIQUE,
    account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    job_id          uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    document_id     uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    -- pending | delivered | failed | gone
    state           text NOT NULL DEFAULT 'pending',
    payload         jsonb NOT NULL,
    attempts        int NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (document_id)
);
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id);

CREATE TABLE webhook_attempts (
    id               bigserial PRIMARY KEY,
    delivery_id      uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempted_at     timestamptz NOT NULL DEFAULT now(),
    status_code      int,
    latency_ms       int NOT NULL,
    response_excerpt text,
    -- timeout | dns | connect | tls | http | refused (SSRF guard)
    error_class      text,
    error_message    text
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, id);
CREATE INDEX webhook_attempts_time ON webhook_attempts (attempted_at);

-- The work queue (River's design on our own table): the API's INSERT is the
-- enqueue, workers claim with FOR UPDATE SKIP LOCKED and hold a lease.
CREATE TABLE tasks (
    id           bigserial PRIMARY KEY,
    -- job (unzip or single file) | document | delivery
    kind         text NOT NULL,
    ref_id       uuid NOT NULL,
    -- available | running | completed | failed
    state        text NOT NULL DEFAULT 'available',
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     int NOT NULL DEFAULT 0,
    max_attempts int NOT NULL DEFAULT 25,
    locked_by    text,
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX tasks_available ON tasks (run_at, id) WHERE state = 'available';
CREATE INDEX tasks_running ON tasks (locked_until) WHERE state = 'running';
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE state IN ('completed', 'failed');
CREATE UNIQUE INDEX tasks_active_ref ON tasks (kind, ref_id) WHERE state IN ('available', 'running');
