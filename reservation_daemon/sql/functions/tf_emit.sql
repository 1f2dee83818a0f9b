-- Append one event to the stream to billing, without a sequence number: the relay numbers
-- committed rows in id order (tf_sequence_outbox), so writers share no lock here and send
-- no NOTIFY (the daemon wakes its relay after the commit: reservation_daemon/streams.py).
-- Call it LAST in a transaction's work on the rows the event is about, after their locks
-- are taken: id comes from a sequence at this moment, and that is what puts two events of
-- one reservation (or one seat) in the order their transactions held the lock.
-- Returns the row's id (not its seq, which does not exist yet). PL/pgSQL rather than SQL:
-- it keeps the INSERT's plan across calls (a SQL function is planned at every call: 2x slower).
-- p_correlation: the correlation id of the request that caused the event (README, "Tracing").
CREATE OR REPLACE FUNCTION tf_emit(p_type text, p_data jsonb, p_correlation text DEFAULT NULL) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO outbox (stream, event_id, type, data, correlation_id)
    VALUES ('reservations', gen_random_uuid(), p_type, p_data, p_correlation)
    RETURNING id INTO v_id;
    RETURN v_id;
END $$;
