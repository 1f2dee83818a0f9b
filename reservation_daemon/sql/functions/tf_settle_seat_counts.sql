-- Fold the unsettled rows of every event that has some into one settled row. Returns
-- the number of events settled. Only rows this statement can see are deleted, and it
-- re-inserts exactly their sum, so deltas committed meanwhile are kept for the next
-- round and the totals never change. One replica settles at a time (the others skip).
CREATE OR REPLACE FUNCTION tf_settle_seat_counts() RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_events int;
BEGIN
    IF NOT pg_try_advisory_xact_lock(1952867450, 0) THEN  -- a key of its own (two-key space)
        RETURN 0;
    END IF;
    WITH gone AS (
        DELETE FROM seat_count_deltas d
         WHERE d.event_id IN (SELECT u.event_id FROM seat_count_deltas u WHERE NOT u.settled)
        RETURNING d.event_id, d.total, d.available, d.held, d.sold
    ), settled AS (
        INSERT INTO seat_count_deltas (event_id, total, available, held, sold, settled)
        SELECT g.event_id, sum(g.total), sum(g.available), sum(g.held), sum(g.sold), true
          FROM gone g GROUP BY g.event_id
        RETURNING 1
    )
    SELECT count(*) INTO v_events FROM settled;
    RETURN v_events;
END $$;
