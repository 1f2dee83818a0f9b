-- Stored functions live one per file in reservation_daemon/sql/functions/ and the migrator
-- re-applies a file when its text changes (deploy/runtime/migrations.py). Versioned
-- migrations hold tables, indexes, triggers and other DDL only; the functions restated in
-- 0001-0006 are history, and the files are their source of truth from here on.
--
-- The hold functions (tf_reserve, tf_cancel, tf_confirm, tf_release_sold, tf_claim_key)
-- now answer with a domain outcome ('held', 'seat_unavailable', 'hold_lost', ...) and the
-- API layer maps outcomes to HTTP statuses and error envelopes. Their result type
-- changes, so the old versions are dropped here and their files create the new ones (the
-- migrator applies every function file after a run that applied a migration).

DROP FUNCTION tf_reserve(uuid, uuid, uuid[], text, interval, text, text, text);
DROP FUNCTION tf_cancel(uuid);
DROP FUNCTION tf_confirm(uuid);
DROP FUNCTION tf_release_sold(uuid);
DROP FUNCTION tf_claim_key(text, text, text);
DROP FUNCTION tf_error(text, text, jsonb);

-- An Idempotency-Key's stored answer is the outcome and its body; a replay is mapped to
-- HTTP again, by the same table as the first answer. Keys stored before this migration
-- held the HTTP answer: their error codes are the outcomes' names upper-cased, and their
-- details the bodies. Only tf_reserve (held) and event creation (event_created) store keys.
ALTER TABLE idempotency_keys ADD COLUMN outcome text NOT NULL DEFAULT '';
UPDATE idempotency_keys
   SET outcome = CASE WHEN body ? 'error' THEN lower(body -> 'error' ->> 'code')
                      WHEN body ? 'venue' THEN 'event_created'
                      ELSE 'held' END,
       body = CASE WHEN body ? 'error' THEN coalesce(body -> 'error' -> 'details', '{}') ELSE body END;
ALTER TABLE idempotency_keys ALTER COLUMN outcome DROP DEFAULT;
ALTER TABLE idempotency_keys DROP COLUMN status;
