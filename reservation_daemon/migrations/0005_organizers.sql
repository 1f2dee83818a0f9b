-- Who organizes each event (issue 9): organizers see the reservations and orders of their
-- own events only. Events created by a service (the demo, tools) have none.
ALTER TABLE events ADD COLUMN organizer_id text;

-- A reservation names its event's organizer, in API responses and in reservation.created,
-- so billing knows whose event each order is for without asking.
CREATE OR REPLACE FUNCTION tf_reservation_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'event_id', r.event_id,
        'user_id', r.user_id,
        'organizer_id', e.organizer_id,
        'status', CASE WHEN r.status = 'held' AND r.expires_at <= now() THEN 'expired' ELSE r.status END,
        'seats', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_number,
                        'number', s.seat_number, 'price_minor', s.price_minor, 'currency', s.currency)
                        ORDER BY s.label), '[]'::jsonb)
                  FROM seats s WHERE s.id = ANY (r.seat_ids)),
        'amount_minor', r.amount_minor,
        'currency', r.currency,
        'created_at', tf_time(r.created_at),
        'expires_at', tf_time(r.expires_at))
    FROM reservations r JOIN events e ON e.id = r.event_id WHERE r.id = p_id
$$;

-- Who changed seat ownership (cancel, confirm, release), when and why.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    actor_role text NOT NULL,
    action     text NOT NULL,
    target     uuid NOT NULL,
    reason     text
);
CREATE INDEX audit_by_target ON audit_log (target, at);
