-- Each statement that moves seats between statuses appends one seat_count_deltas row per
-- event (the net change), in the changing transaction, so counts commit with the change.
CREATE OR REPLACE FUNCTION tf_count_changed_seats() RETURNS trigger
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
