-- After a rotation the previous signing secret still signs every webhook (a
-- second signature in webhook-signature, as Standard Webhooks allows) until
-- webhook_previous_secret_expires_at, so receivers switch without failures.
ALTER TABLE templates
    ADD COLUMN webhook_previous_secret_enc bytea,
    ADD COLUMN webhook_previous_secret_expires_at timestamptz;
