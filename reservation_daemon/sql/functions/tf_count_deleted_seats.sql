-- Each statement that deletes seats appends one negative seat_count_deltas row per event.
CREATE OR REPLACE FUNCTION tf_count_deleted_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seat_count_deltas (event_id, total, available, held, sold)
    SELECT o.event_id, -count(*), -count(*) FILTER (WHERE o.status = 'available'),
           -count(*) FILTER (WHERE o.status = 'held'), -count(*) FILTER (WHERE o.status = 'sold')
      FROM old_seats o GROUP BY o.event_id;
    RETURN NULL;
END $$;
