-- Append one event to the stream to billing. The UPDATE takes the stream row's lock until
-- commit, so sequence numbers are gap-free and commit in order.
CREATE OR REPLACE FUNCTION tf_emit(p_type text, p_data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_seq bigint;
BEGIN
    UPDATE stream_heads SET last_seq = last_seq + 1 WHERE stream = 'reservations' RETURNING last_seq INTO v_seq;
    INSERT INTO outbox (stream, seq, event_id, type, data)
    VALUES ('reservations', v_seq, gen_random_uuid(), p_type, p_data);
    PERFORM pg_notify('tf_outbox_reservations', '');
    RETURN v_seq;
END $$;
