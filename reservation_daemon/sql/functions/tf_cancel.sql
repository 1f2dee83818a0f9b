-- Release a hold on the buyer's request (the API asked billing first). Returns (outcome, body):
--   cancelled              body: the reservation (also when it already was: releasing twice is harmless)
--   reservation_not_found  body: {}
--   not_held               body: {"status": its status}  (expired or confirmed)
-- p_correlation: the request's correlation id, stored with the outbox row (README, "Tracing").
CREATE OR REPLACE FUNCTION tf_cancel(p_id uuid, p_correlation text DEFAULT NULL) RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    SELECT * INTO v_res FROM reservations r WHERE r.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'reservation_not_found'::text, '{}'::jsonb;
        RETURN;
    END IF;
    -- Past its expiry (billing has just said no payment holds it): it expires rather than
    -- being cancelled, and the buyer is told it is no longer held.
    IF v_res.status = 'held' AND v_res.expires_at <= now() THEN
        PERFORM tf_expire(p_id);
        v_res.status := 'expired';
    END IF;
    IF v_res.status = 'cancelled' THEN
        RETURN QUERY SELECT 'cancelled'::text, tf_reservation_json(p_id);
        RETURN;
    END IF;
    IF v_res.status <> 'held' THEN
        RETURN QUERY SELECT 'not_held'::text, jsonb_build_object('status', v_res.status);
        RETURN;
    END IF;
    UPDATE reservations r SET status = 'cancelled', updated_at = now() WHERE r.id = p_id;
    UPDATE seats s SET status = 'available', reservation_id = NULL WHERE s.reservation_id = p_id AND s.status = 'held';
    PERFORM tf_emit('reservation.cancelled', jsonb_build_object(
        'reservation_id', p_id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'cancelled_at', tf_time(now())), p_correlation);
    RETURN QUERY SELECT 'cancelled'::text, tf_reservation_json(p_id);
END $$;
