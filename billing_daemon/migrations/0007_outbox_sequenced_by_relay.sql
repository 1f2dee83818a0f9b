-- Issue 13: the payments stream's sequence is assigned by the relay, not by each writer.
--
-- Writers insert outbox rows with seq NULL (one INSERT, no stream_heads row lock held
-- to commit); the single active relay numbers committed rows in AUTO_INCREMENT id order
-- (billing_daemon/store/outbox.py says why that is commit order where it matters).
-- - id: AUTO_INCREMENT, the new primary key. Existing rows are numbered in their old
--   primary key order, (stream, seq), and keep their seq.
-- - seq: NULL until the relay numbers the row; (stream, seq) stays unique (NULLs may
--   repeat).
-- - outbox_unsequenced: finds the unsequenced rows in id order, `stream = ? AND seq IS
--   NULL ORDER BY id LIMIT n`, without a sort. (outbox_seq ends with id too, as every
--   InnoDB secondary index ends with the primary key, but MariaDB 10.11 still sorts when
--   the id is not a declared column of the index.)
--
-- One ALTER (rebuilds the table; writers wait for it). Wrapped so that running the file
-- again after the ALTER committed but before it was recorded is harmless.
BEGIN NOT ATOMIC IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = DATABASE() AND table_name = 'outbox' AND column_name = 'id') THEN ALTER TABLE outbox
    DROP PRIMARY KEY,
    ADD COLUMN id BIGINT NOT NULL AUTO_INCREMENT FIRST,
    ADD PRIMARY KEY (id),
    MODIFY seq BIGINT NULL,
    ADD UNIQUE KEY outbox_seq (stream, seq),
    ADD KEY outbox_unsequenced (stream, seq, id); END IF; END;
