-- Writers no longer number the stream (issue 13). tf_emit used to take the stream_heads row
-- lock until commit to give each event its gap-free seq, which serialised every hold in the
-- database. From here on a writer inserts its outbox row with seq NULL; the relay numbers
-- committed rows in one short transaction of its own (tf_sequence_outbox), in the order of
-- id, and the stream on the wire is gap-free and in commit order where it matters (README,
-- "Order of the reservation stream"; PROTOCOL.md section 4).
--
-- id is drawn from the identity's sequence when the row is inserted, i.e. after the writer
-- took every row lock the event depends on (each function emits last). The sequence must
-- keep CACHE 1 (the default): with a per-session cache, id order would no longer be the
-- order in which writers reached their emit.
--
-- Rows written before this migration keep their seq. A replica of the previous version
-- that still runs the old tf_emit between this migration and the re-applied function files
-- numbers its row itself under the same stream_heads lock the sequencer takes: both agree.

ALTER TABLE outbox ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE outbox DROP CONSTRAINT outbox_pkey;
ALTER TABLE outbox ALTER COLUMN seq DROP NOT NULL;
-- The stream's order: unique per stream among numbered rows (a NULL seq takes no entry).
CREATE UNIQUE INDEX outbox_stream_seq ON outbox (stream, seq) WHERE seq IS NOT NULL;
-- What the sequencer looks for: rows not numbered yet, in id order.
CREATE INDEX outbox_unsequenced ON outbox (stream, id) WHERE seq IS NULL;
-- Every row still has a key, its event id (UNIQUE NOT NULL); the sequencer's UPDATEs are
-- identified by it should the table ever be logically replicated.
ALTER TABLE outbox REPLICA IDENTITY USING INDEX outbox_event_id_key;
