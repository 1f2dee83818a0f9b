-- Correlation ids (issue 14, README "Tracing"): each notification keeps the id of the request
-- that caused its sale event (the AMQP message's correlation_id), so its delivery, often
-- later and retried, is logged under the same id. Nullable: rows from before keep NULL.
ALTER TABLE portal_notifications ADD COLUMN correlation_id text;
