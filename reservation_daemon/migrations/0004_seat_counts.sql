-- Seat counts per event without counting seats, and an index for paging through seats.
--
-- GET /api/events used to aggregate every seat of every event per call. Counts now
-- come from seat_count_deltas: triggers on seats append one row per event per
-- statement that changes seats (inserted rows, status moves), in the changing
-- transaction, so the counts commit (or roll back) with the change itself. A delta
-- row is an insert, never an update of a shared row: concurrent holds do not queue
-- on it and cannot deadlock with the stream_heads lock that tf_emit takes. The
-- counts of an event are the sum of its rows; tf_settle_seat_counts (run by every
-- replica about once a second) folds each event's new rows into one settled row, so
-- a read sums a handful of rows. No hold function is restated: the triggers watch
-- the seats table whatever function moves a seat.

CREATE TABLE seat_count_deltas (
    event_id  uuid NOT NULL,
    total     bigint NOT NULL,
    available bigint NOT NULL,
    held      bigint NOT NULL,
    sold      bigint NOT NULL,
    settled   boolean NOT NULL DEFAULT false
);
CREATE INDEX seat_count_deltas_by_event ON seat_count_deltas (event_id);
CREATE INDEX seat_count_deltas_unsettled ON seat_count_deltas (event_id) WHERE NOT settled;

CREATE FUNCTION tf_count_inserted_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seat_count_deltas (event_id, total, available, held, sold)
    SELECT n.event_id, count(*), count(*) FILTER (WHERE n.status = 'available'),
           count(*) FILTER (WHERE n.status = 'held'), count(*) FILTER (WHERE n.status = 'sold')
      FROM new_seats n GROUP BY n.event_id;
    RETURN NULL;
END $$;

CREATE FUNCTION tf_count_changed_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seat_count_deltas (event_id, total, available, held, sold)
    SELECT d.event_id, sum(d.n), sum(d.a), sum(d.h), sum(d.s)
      FROM (SELECT n.event_id, 1 AS n, (n.status = 'available')::int AS a, (n.status = 'held')::int AS h,
                   (n.status = 'sold')::int AS s
              FROM new_seats n
            UNION ALL
            SELECT o.event_id, -1, -(o.status = 'available')::int, -(o.status = 'held')::int,
                   -(o.status = 'sold')::int
              FROM old_seats o) d
     GROUP BY d.event_id
    HAVING sum(d.n) <> 0 OR sum(d.a) <> 0 OR sum(d.h) <> 0 OR sum(d.s) <> 0;
    RETURN NULL;
END $$;

CREATE FUNCTION tf_count_deleted_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seat_count_deltas (event_id, total, available, held, sold)
    SELECT o.event_id, -count(*), -count(*) FILTER (WHERE o.status = 'available'),
           -count(*) FILTER (WHERE o.status = 'held'), -count(*) FILTER (WHERE o.status = 'sold')
      FROM old_seats o GROUP BY o.event_id;
    RETURN NULL;
END $$;

-- Creating the triggers locks seats against writes until this migration commits, so
-- the backfill below and the triggers together count every seat exactly once.
CREATE TRIGGER seats_counted_on_insert AFTER INSERT ON seats
    REFERENCING NEW TABLE AS new_seats FOR EACH STATEMENT EXECUTE FUNCTION tf_count_inserted_seats();
CREATE TRIGGER seats_counted_on_update AFTER UPDATE ON seats
    REFERENCING OLD TABLE AS old_seats NEW TABLE AS new_seats FOR EACH STATEMENT EXECUTE FUNCTION tf_count_changed_seats();
CREATE TRIGGER seats_counted_on_delete AFTER DELETE ON seats
    REFERENCING OLD TABLE AS old_seats FOR EACH STATEMENT EXECUTE FUNCTION tf_count_deleted_seats();

INSERT INTO seat_count_deltas (event_id, total, available, held, sold, settled)
SELECT s.event_id, count(*), count(*) FILTER (WHERE s.status = 'available'),
       count(*) FILTER (WHERE s.status = 'held'), count(*) FILTER (WHERE s.status = 'sold'), true
  FROM seats s GROUP BY s.event_id;

-- tf_settle_seat_counts (folding each event's deltas) lives in
-- reservation_daemon/sql/functions/. The trigger functions above stay here as well: a trigger
-- needs its function when it is created, and counting must be right from this commit on,
-- while replicas of the previous version may still be moving seats.

-- Seats in their display order (section, row, number) per event, with and without a
-- status filter: GET /api/events/{id}/seats pages through them by key.
CREATE INDEX seats_in_order ON seats (event_id, section, row_number, seat_number);
CREATE INDEX seats_in_order_by_status ON seats (event_id, status, section, row_number, seat_number);
DROP INDEX seats_by_event_status;  -- a prefix of seats_in_order_by_status

-- Events in listing order, for GET /api/events pages.
CREATE INDEX events_in_order ON events (starts_at, id);
