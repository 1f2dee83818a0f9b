-- After a refund (the API checked it with billing), a sold reservation's seats go back on
-- sale. Returns (outcome, body):
--   released               body: the reservation, now cancelled
--   not_sold               body: the reservation (expired, cancelled or still held: nothing to
--                          give back, so releasing twice is harmless)
--   reservation_not_found  body: {}
-- p_correlation: the request's correlation id, stored with the outbox row (README, "Tracing").
CREATE OR REPLACE FUNCTION tf_release_sold(p_id uuid, p_correlation text DEFAULT NULL) RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    SELECT * INTO v_res FROM reservations r WHERE r.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'reservation_not_found'::text, '{}'::jsonb;
        RETURN;
    END IF;
    IF v_res.status <> 'confirmed' THEN
        RETURN QUERY SELECT 'not_sold'::text, tf_reservation_json(p_id);
        RETURN;
    END IF;
    UPDATE reservations r SET status = 'cancelled', updated_at = now() WHERE r.id = p_id;
    UPDATE seats s SET status = 'available', reservation_id = NULL WHERE s.reservation_id = p_id AND s.status = 'sold';
    PERFORM tf_emit('reservation.cancelled', jsonb_build_object(
        'reservation_id', p_id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'cancelled_at', tf_time(now()), 'reason', 'refunded'), p_correlation);
    RETURN QUERY SELECT 'released'::text, tf_reservation_json(p_id);
END $$;
