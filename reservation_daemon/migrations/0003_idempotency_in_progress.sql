-- An Idempotency-Key that is still being processed answers 409 REQUEST_IN_PROGRESS
-- at once (as every TicketFlow API does) instead of queueing behind the first
-- request's transaction. tf_reserve is restated with the claim moved into
-- tf_claim_key, which create_event shares, and its outbox row written last.

-- Claim an Idempotency-Key inside the caller's transaction. No row: the key is
-- ours, go ahead. One row: answer it instead (the earlier response, 422 for a key
-- reused with a different request, 409 while another transaction holds the key).
--
-- The transaction-scoped advisory lock is what tells "in progress" from "done":
-- it is released only after the holder's commit is visible, so whoever gets it
-- next sees the recorded response. The two-key form keeps these locks apart from
-- the relay's and the migrator's one-key locks; a 32-bit hash collision between
-- two keys in flight at the same moment costs one spurious 409, which the client
-- retries.
CREATE FUNCTION tf_claim_key(p_scope text, p_key text, p_hash text) RETURNS TABLE (status int, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_prior idempotency_keys;
BEGIN
    -- A finished key answers without the lock, so a burst of retries after the
    -- first response is never told "in progress". (Only committed rows are
    -- visible here, and a committed row always carries its final response.)
    SELECT * INTO v_prior FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    IF NOT FOUND THEN
        IF NOT pg_try_advisory_xact_lock(1952867449, hashtext(p_scope || ' ' || p_key)) THEN
            RETURN QUERY SELECT 409, tf_error('REQUEST_IN_PROGRESS',
                'a request with this Idempotency-Key is still being processed; retry shortly');
            RETURN;
        END IF;
        INSERT INTO idempotency_keys (scope, key, request_hash, status, body)
        VALUES (p_scope, p_key, p_hash, 0, '{}') ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
        -- It finished between our look and our lock.
        SELECT * INTO v_prior FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    END IF;
    IF v_prior.request_hash <> p_hash THEN
        RETURN QUERY SELECT 422, tf_error('IDEMPOTENCY_KEY_REUSED',
            'this Idempotency-Key was used for a different request');
        RETURN;
    END IF;
    RETURN QUERY SELECT v_prior.status, v_prior.body;
END $$;

CREATE OR REPLACE FUNCTION tf_reserve(p_id uuid, p_event uuid, p_seats uuid[], p_user text, p_ttl interval,
                           p_scope text, p_key text, p_hash text)
RETURNS TABLE (status int, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_prior_status int;
    v_prior_body jsonb;
    v_found int;
    v_events int;
    v_event uuid;
    v_currencies int;
    v_amount bigint;
    v_currency text;
    v_unavailable uuid[];
    v_stale uuid;
    v_status int;
    v_body jsonb;
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT * INTO v_prior_status, v_prior_body FROM tf_claim_key(p_scope, p_key, p_hash);
        IF FOUND THEN
            RETURN QUERY SELECT v_prior_status, v_prior_body;
            RETURN;
        END IF;
    END IF;

    -- Lock in a stable order so overlapping multi-seat holds queue instead of deadlocking.
    PERFORM 1 FROM seats s WHERE s.id = ANY (p_seats) ORDER BY s.id FOR UPDATE;

    -- Holds past their expiry that the sweeper has not reached yet release here, so
    -- availability is exact rather than "as of the last sweep".
    FOR v_stale IN
        SELECT DISTINCT r.id FROM seats s JOIN reservations r ON r.id = s.reservation_id
         WHERE s.id = ANY (p_seats) AND s.status = 'held' AND r.status = 'held' AND r.expires_at <= now()
    LOOP
        PERFORM tf_expire(v_stale);
    END LOOP;

    SELECT count(*), count(DISTINCT s.event_id), min(s.event_id::text)::uuid, count(DISTINCT s.currency),
           sum(s.price_minor), min(s.currency),
           array_agg(s.id ORDER BY s.id) FILTER (WHERE s.status <> 'available')
      INTO v_found, v_events, v_event, v_currencies, v_amount, v_currency, v_unavailable
      FROM seats s WHERE s.id = ANY (p_seats);

    IF v_found < cardinality(p_seats) THEN
        v_status := 404;
        v_body := tf_error('SEAT_NOT_FOUND', 'one or more seats do not exist',
            jsonb_build_object('seat_ids', (SELECT jsonb_agg(x) FROM unnest(p_seats) x
                                              WHERE NOT EXISTS (SELECT 1 FROM seats s WHERE s.id = x))));
    ELSIF p_event IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = p_event) THEN
        v_status := 404;
        v_body := tf_error('EVENT_NOT_FOUND', 'no such event');
    ELSIF v_events > 1 OR (p_event IS NOT NULL AND v_event <> p_event) THEN
        v_status := 422;
        v_body := tf_error('SEAT_NOT_IN_EVENT', 'every seat of a hold must belong to the requested event');
    ELSIF v_unavailable IS NOT NULL THEN
        v_status := 409;
        v_body := tf_error('SEAT_UNAVAILABLE', 'one or more seats are already held or sold',
            jsonb_build_object('seat_ids', to_jsonb(v_unavailable)));
    ELSIF v_currencies > 1 THEN
        v_status := 422;
        v_body := tf_error('MIXED_CURRENCIES', 'seats priced in different currencies cannot share a hold');
    ELSE
        INSERT INTO reservations (id, event_id, user_id, status, seat_ids, amount_minor, currency, expires_at)
        VALUES (p_id, v_event, p_user, 'held', p_seats, v_amount, v_currency, now() + p_ttl);
        UPDATE seats s SET status = 'held', reservation_id = p_id WHERE s.id = ANY (p_seats);
        v_status := 201;
        v_body := tf_reservation_json(p_id);
    END IF;

    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET status = v_status, body = v_body WHERE k.scope = p_scope AND k.key = p_key;
    END IF;
    -- Last, so the stream's sequence row is locked for as short a time as possible.
    IF v_status = 201 THEN
        PERFORM tf_emit('reservation.created', v_body);
    END IF;
    RETURN QUERY SELECT v_status, v_body;
END $$;
