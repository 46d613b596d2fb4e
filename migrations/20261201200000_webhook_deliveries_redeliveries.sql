-- How many times a delivery was queued again on request (POST
-- /v1/jobs/{id}/redeliver, /v1/jobs/redeliver). A worker records its
-- attempt over the delivery only if this did not change while it was
-- sending: a redelivery asked for meanwhile is then sent again, not
-- overwritten by the attempt's outcome.
ALTER TABLE webhook_deliveries ADD COLUMN redeliveries int NOT NULL DEFAULT 0;
