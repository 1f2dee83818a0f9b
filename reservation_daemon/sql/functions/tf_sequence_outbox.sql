-- Number up to p_limit committed, not yet numbered outbox rows of a stream: last_seq+1, ... in
-- id order, and advance last_seq, in the caller's (short) transaction. Returns the stream's
-- head (its last seq) afterwards. Called by the relay (tf_outbox_read, the stream's head,
-- and while the link is down), and before pruning; anyone may call it at any time.
--
-- Why the numbers are gap-free and in commit order where order matters:
-- - Only sequencers take the stream_heads row lock, so they run one at a time (two relays
--   overlapping briefly, a pruner). Each statement below sees what committed before it
--   started (READ COMMITTED), so after waiting for the lock it sees the other's numbers.
-- - A row becomes visible only when its writer commits: everything numbered by a later call
--   committed after everything numbered by an earlier one. Within one call, id order is the
--   order in which writers reached tf_emit, which every function calls after taking the row
--   locks the event depends on: of two transactions touching the same reservation or seat,
--   the second waited for the first's commit before it drew its id. Transactions that share
--   no row may come out in either order; nothing depends on theirs.
-- - The pending rows are locked before they are counted, so each one numbered exists and
--   the numbers last_seq+1 .. last_seq+n are all used.
-- The numbering transaction commits with synchronous_commit on: a seq the relay sends must
-- survive a crash of this server, or a later row could be given a seq billing already has.
-- Rows numbered: one NOTIFY on tf_stream_numbered (payload: the stream), sent at commit. It is
-- the seat streams' change signal (reservation_daemon/seatstream.py): every seat change is a
-- row of this stream, so each daemon's one reader reads the newly numbered rows on it. One
-- notification per numbering batch of the single active relay (at most every 2 ms), never
-- per hold: writers still send nothing (issue 13).
-- No nested loop: right after a burst of writes (a backlog built while billing was down) the
-- table's statistics still say "no unnumbered row", and the planner's nested loop then joins
-- every unnumbered row against every numbered one: 1,000 rows took 5.6 s, 5,000 took 39 s, on
-- a loaded machine (a hash join: 0.01 s and 0.05 s), which held billing's catch-up back ~20 s.
CREATE OR REPLACE FUNCTION tf_sequence_outbox(p_stream text, p_limit int) RETURNS bigint
LANGUAGE plpgsql SET enable_nestloop = off AS $$
DECLARE
    v_last bigint;
    v_numbered bigint;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM outbox o WHERE o.stream = p_stream AND o.seq IS NULL) THEN
        RETURN (SELECT h.last_seq FROM stream_heads h WHERE h.stream = p_stream);
    END IF;
    SELECT h.last_seq INTO v_last FROM stream_heads h WHERE h.stream = p_stream FOR UPDATE;
    WITH pending AS (
        SELECT o.id FROM outbox o WHERE o.stream = p_stream AND o.seq IS NULL
         ORDER BY o.id LIMIT p_limit FOR UPDATE
    ), numbered AS (
        SELECT p.id, v_last + row_number() OVER (ORDER BY p.id) AS seq FROM pending p
    ), done AS (
        UPDATE outbox o SET seq = n.seq FROM numbered n
         WHERE o.stream = p_stream AND o.seq IS NULL AND o.id = n.id
        RETURNING 1
    )
    SELECT count(*) INTO v_numbered FROM done;
    IF v_numbered > 0 THEN
        UPDATE stream_heads h SET last_seq = v_last + v_numbered WHERE h.stream = p_stream;
        PERFORM set_config('synchronous_commit', 'on', true);
        PERFORM pg_notify('tf_stream_numbered', p_stream);
    END IF;
    RETURN v_last + v_numbered;
END $$;
