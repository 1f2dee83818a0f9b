-- Turn a live hold into a sale: the seats become sold. Returns (outcome, body):
--   confirmed              body: the reservation (also when it already was: confirming twice is harmless)
--   reservation_not_found  body: {}
--   hold_lost              body: {"status": its status}  (expired or cancelled: its seats may be sold to someone else)
-- A hold still held becomes a sale even past its expiry: it has not been released with
-- billing's word, and the service confirms only after billing took the payment.
-- p_correlation: the request's correlation id, stored with the outbox row (README, "Tracing").
CREATE OR REPLACE FUNCTION tf_confirm(p_id uuid, p_correlation text DEFAULT NULL) RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    SELECT * INTO v_res FROM reservations r WHERE r.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'reservation_not_found'::text, '{}'::jsonb;
        RETURN;
    END IF;
    IF v_res.status = 'confirmed' THEN
        RETURN QUERY SELECT 'confirmed'::text, tf_reservation_json(p_id);
        RETURN;
    END IF;
    IF v_res.status <> 'held' THEN
        RETURN QUERY SELECT 'hold_lost'::text, jsonb_build_object('status', v_res.status);
        RETURN;
    END IF;
    UPDATE reservations r SET status = 'confirmed', updated_at = now() WHERE r.id = p_id;
    UPDATE seats s SET status = 'sold' WHERE s.reservation_id = p_id;
    PERFORM tf_emit('reservation.confirmed', jsonb_build_object(
        'reservation_id', p_id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'amount_minor', v_res.amount_minor,
        'currency', v_res.currency, 'confirmed_at', tf_time(now())), p_correlation);
    RETURN QUERY SELECT 'confirmed'::text, tf_reservation_json(p_id);
END $$;
