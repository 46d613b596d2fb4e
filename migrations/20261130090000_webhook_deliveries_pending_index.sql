-- Retries pending and the oldest pending delivery are read on every metrics
-- scrape: keep them an index scan however many deliveries are kept.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (created_at) WHERE state = 'pending';
