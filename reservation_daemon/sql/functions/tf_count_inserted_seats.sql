-- Seat counts without counting seats (migration 0004 made the triggers): each statement that
-- inserts seats appends one seat_count_deltas row per event, in the inserting transaction.
CREATE OR REPLACE FUNCTION tf_count_inserted_seats() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO seat_count_deltas (event_id, total, available, held, sold)
    SELECT n.event_id, count(*), count(*) FILTER (WHERE n.status = 'available'),
           count(*) FILTER (WHERE n.status = 'held'), count(*) FILTER (WHERE n.status = 'sold')
      FROM new_seats n GROUP BY n.event_id;
    RETURN NULL;
END $$;
