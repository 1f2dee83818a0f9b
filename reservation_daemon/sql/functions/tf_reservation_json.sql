-- The public representation of a reservation (API responses and event data alike). It names
-- its event's organizer, so billing knows whose event each order is for without asking, and
-- shows the real status: a hold past its expiry stays "held" until it is released with
-- billing's word (it may be paid and about to be confirmed).
CREATE OR REPLACE FUNCTION tf_reservation_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'event_id', r.event_id,
        'user_id', r.user_id,
        'organizer_id', e.organizer_id,
        'status', r.status,
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
