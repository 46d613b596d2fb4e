-- Dashboard sessions: a browser signs in with an API key and gets an opaque
-- session token in an HttpOnly cookie. Only the token's SHA-256 is stored;
-- revoking the key ends its sessions.
CREATE TABLE sessions (
    id          uuid PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    api_key_id  uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    -- Sent back in the x-csrf-token header on every state-changing request.
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);
