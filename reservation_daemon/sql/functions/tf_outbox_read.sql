-- The relay's read, in one round trip: up to p_limit events of a stream after seq p_after,
-- in seq order, numbering committed rows first (tf_sequence_outbox) when the numbered ones
-- do not fill the request. Call it outside an explicit transaction: the numbers it returns
-- are committed (durably) before the client sees the answer.
CREATE OR REPLACE FUNCTION tf_outbox_read(p_stream text, p_after bigint, p_limit int)
RETURNS TABLE (seq bigint, event_id uuid, type text, data jsonb, created text, correlation_id text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF (SELECT h.last_seq FROM stream_heads h WHERE h.stream = p_stream) - p_after < p_limit THEN
        PERFORM tf_sequence_outbox(p_stream, p_limit);
    END IF;
    RETURN QUERY
        SELECT o.seq, o.event_id, o.type, o.data, tf_time(o.created_at), o.correlation_id FROM outbox o
         WHERE o.stream = p_stream AND o.seq > p_after ORDER BY o.seq LIMIT p_limit;
END $$;
