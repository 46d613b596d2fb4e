-- The job listing's delivery filter (GET /v1/jobs?delivery=failed) starts
-- from an account's deliveries in one state.
CREATE INDEX webhook_deliveries_account_state ON webhook_deliveries (account_id, state);
