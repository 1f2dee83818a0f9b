-- Correlation ids (issue 14, README "Tracing"). Nullable, at the end of the table: MariaDB
-- adds such a column in place (no table copy), and rows from before keep NULL.
-- - outbox.correlation_id: the id of the request that caused the event (the pay, refund or
--   check-in request), sent as the event's optional `correlationid` (PROTOCOL.md section 5).
-- - orders.correlation_id: the id the order's reservation.created event carried, i.e. the
--   buyer's hold request; `ticketflow trace ORDER_ID` starts from it.
ALTER TABLE outbox ADD COLUMN correlation_id VARCHAR(128) NULL;
ALTER TABLE orders ADD COLUMN correlation_id VARCHAR(128) NULL;
