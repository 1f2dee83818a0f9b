-- Release a hold whose time is up (called only with billing's word: tf_settle_holds).
-- Returns true if it was still held and is now expired.
CREATE OR REPLACE FUNCTION tf_expire(p_id uuid) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    UPDATE reservations SET status = 'expired', updated_at = now()
     WHERE id = p_id AND status = 'held' AND expires_at <= now()
    RETURNING * INTO v_res;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE seats SET status = 'available', reservation_id = NULL WHERE reservation_id = p_id AND status = 'held';
    PERFORM tf_emit('reservation.expired', jsonb_build_object(
        'reservation_id', v_res.id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'expired_at', tf_time(now())));
    RETURN true;
END $$;
