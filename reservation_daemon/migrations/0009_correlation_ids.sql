-- Correlation ids (issue 14, README "Tracing"): each outbox row keeps the id of the HTTP
-- request that caused it (NULL for rows the sweeper writes, and for rows written before),
-- and the relay sends it as the event's optional `correlationid` (PROTOCOL.md section 5).
-- Nullable and without a default: adding the column rewrites nothing.
ALTER TABLE outbox ADD COLUMN correlation_id text;

-- The functions a request calls gain a trailing optional parameter, p_correlation (DEFAULT
-- NULL, so every existing call still resolves). A new signature is a new function: the old
-- ones are dropped here, and their files create the new ones (the migrator applies every
-- function file after a run that applied a migration). IF EXISTS: a database migrated
-- from before 0007 in one run has none of them at this point (0007 dropped them).
DROP FUNCTION IF EXISTS tf_emit(text, jsonb);
DROP FUNCTION IF EXISTS tf_reserve(uuid, uuid, uuid[], text, interval, text, text, text);
DROP FUNCTION IF EXISTS tf_cancel(uuid);
DROP FUNCTION IF EXISTS tf_confirm(uuid);
DROP FUNCTION IF EXISTS tf_release_sold(uuid);
-- The relay's read returns the column too (a new result type).
DROP FUNCTION IF EXISTS tf_outbox_read(text, bigint, int);
