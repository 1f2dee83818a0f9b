-- Reservation daemon schema: events, seats, reservations, the outbox stream to billing.
--
-- Every state change goes through a function below that writes the change and its
-- outbox row in the same transaction, so the stream and the tables never disagree.

CREATE TABLE events (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    venue       text NOT NULL,
    starts_at   timestamptz NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE seats (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id       uuid NOT NULL REFERENCES events (id),
    section        text NOT NULL,
    row_number     int NOT NULL,
    seat_number    int NOT NULL,
    label          text NOT NULL,
    price_minor    bigint NOT NULL CHECK (price_minor >= 0),
    currency       char(3) NOT NULL,
    status         text NOT NULL DEFAULT 'available' CHECK (status IN ('available', 'held', 'sold')),
    reservation_id uuid,
    UNIQUE (event_id, label)
);
CREATE INDEX seats_by_event_status ON seats (event_id, status);
CREATE INDEX seats_by_reservation ON seats (reservation_id) WHERE reservation_id IS NOT NULL;

CREATE TABLE reservations (
    id           uuid PRIMARY KEY,
    event_id     uuid NOT NULL REFERENCES events (id),
    user_id      text NOT NULL,
    status       text NOT NULL CHECK (status IN ('held', 'cancelled', 'expired', 'confirmed')),
    seat_ids     uuid[] NOT NULL,
    amount_minor bigint NOT NULL,
    currency     char(3) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'held';

-- One row per outgoing stream: the last sequence number written (gap-free because the
-- row lock serialises writers until commit) and the last one the receiver acknowledged.
CREATE TABLE stream_heads (
    stream    text PRIMARY KEY,
    last_seq  bigint NOT NULL DEFAULT 0,
    acked_seq bigint NOT NULL DEFAULT 0,
    acked_at  timestamptz
);
INSERT INTO stream_heads (stream) VALUES ('reservations');

CREATE TABLE outbox (
    stream     text NOT NULL,
    seq        bigint NOT NULL,
    event_id   uuid NOT NULL UNIQUE,
    type       text NOT NULL,
    data       jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, seq)
);

CREATE TABLE idempotency_keys (
    scope        text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    status       int NOT NULL,
    body         jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- RFC 3339 UTC with a Z, whatever the session's time zone.
CREATE FUNCTION tf_time(t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') $$;

CREATE FUNCTION tf_error(p_code text, p_message text, p_details jsonb DEFAULT NULL) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('error', jsonb_strip_nulls(
        jsonb_build_object('code', p_code, 'message', p_message, 'details', p_details)))
$$;

-- Append one event to the stream. The UPDATE takes the stream row's lock until commit,
-- so sequence numbers are gap-free and commit in order.
CREATE FUNCTION tf_emit(p_type text, p_data jsonb) RETURNS bigint
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

-- The public representation of a reservation (API responses and event data alike).
CREATE FUNCTION tf_reservation_json(p_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'event_id', r.event_id,
        'user_id', r.user_id,
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
    FROM reservations r WHERE r.id = p_id
$$;

-- Release a hold whose time is up. Returns true if it was still held and is now expired.
CREATE FUNCTION tf_expire(p_id uuid) RETURNS boolean
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

-- Expire up to p_limit due holds. SKIP LOCKED lets several replicas sweep at once
-- without waiting on (or double-processing) each other's rows.
CREATE FUNCTION tf_expire_due(p_limit int) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_count int := 0;
BEGIN
    FOR v_id IN
        SELECT id FROM reservations
         WHERE status = 'held' AND expires_at <= now()
         ORDER BY expires_at LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        IF tf_expire(v_id) THEN
            v_count := v_count + 1;
        END IF;
    END LOOP;
    RETURN v_count;
END $$;

-- Hold seats, all or nothing, in one statement. Returns (http status, response body).
--
-- p_event may be NULL (the one-seat /api/reserve): the seat's own event is used.
-- With an idempotency key the response is recorded in the same transaction; a retry
-- with that key returns it, and a concurrent retry waits on the key's row and then
-- returns it too, so a key never creates two holds.
CREATE FUNCTION tf_reserve(p_id uuid, p_event uuid, p_seats uuid[], p_user text, p_ttl interval,
                           p_scope text, p_key text, p_hash text)
RETURNS TABLE (status int, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_prior idempotency_keys;
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
        INSERT INTO idempotency_keys (scope, key, request_hash, status, body)
        VALUES (p_scope, p_key, p_hash, 0, '{}') ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            SELECT * INTO v_prior FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
            IF v_prior.request_hash <> p_hash THEN
                RETURN QUERY SELECT 422, tf_error('IDEMPOTENCY_KEY_REUSED',
                    'this Idempotency-Key was used for a different request');
                RETURN;
            END IF;
            RETURN QUERY SELECT v_prior.status, v_prior.body;
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
        PERFORM tf_emit('reservation.created', v_body);
    END IF;

    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET status = v_status, body = v_body WHERE k.scope = p_scope AND k.key = p_key;
    END IF;
    RETURN QUERY SELECT v_status, v_body;
END $$;

-- Release a hold on the buyer's request. Returns (http status, body).
CREATE FUNCTION tf_cancel(p_id uuid) RETURNS TABLE (status int, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    SELECT * INTO v_res FROM reservations r WHERE r.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, tf_error('RESERVATION_NOT_FOUND', 'no such reservation');
        RETURN;
    END IF;
    IF v_res.status = 'held' AND v_res.expires_at <= now() THEN
        PERFORM tf_expire(p_id);
        v_res.status := 'expired';
    END IF;
    IF v_res.status = 'cancelled' THEN
        RETURN QUERY SELECT 200, tf_reservation_json(p_id);  -- releasing twice is harmless
        RETURN;
    END IF;
    IF v_res.status <> 'held' THEN
        RETURN QUERY SELECT 409, tf_error('RESERVATION_NOT_HELD',
            'only a held reservation can be released; this one is ' || v_res.status,
            jsonb_build_object('status', v_res.status));
        RETURN;
    END IF;
    UPDATE reservations r SET status = 'cancelled', updated_at = now() WHERE r.id = p_id;
    UPDATE seats s SET status = 'available', reservation_id = NULL WHERE s.reservation_id = p_id AND s.status = 'held';
    PERFORM tf_emit('reservation.cancelled', jsonb_build_object(
        'reservation_id', p_id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'cancelled_at', tf_time(now())));
    RETURN QUERY SELECT 200, tf_reservation_json(p_id);
END $$;

-- Turn a live hold into a sale: the seats become sold. Confirming twice is harmless;
-- confirming a hold that was lost (expired or cancelled) is refused.
CREATE FUNCTION tf_confirm(p_id uuid) RETURNS TABLE (status int, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_res reservations;
BEGIN
    SELECT * INTO v_res FROM reservations r WHERE r.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 404, tf_error('RESERVATION_NOT_FOUND', 'no such reservation');
        RETURN;
    END IF;
    IF v_res.status = 'confirmed' THEN
        RETURN QUERY SELECT 200, tf_reservation_json(p_id);
        RETURN;
    END IF;
    IF v_res.status = 'held' AND v_res.expires_at <= now() THEN
        PERFORM tf_expire(p_id);
        v_res.status := 'expired';
    END IF;
    IF v_res.status <> 'held' THEN
        RETURN QUERY SELECT 409, tf_error('HOLD_LOST', 'the hold is ' || v_res.status || '; its seats may be sold to someone else',
            jsonb_build_object('status', v_res.status));
        RETURN;
    END IF;
    UPDATE reservations r SET status = 'confirmed', updated_at = now() WHERE r.id = p_id;
    UPDATE seats s SET status = 'sold' WHERE s.reservation_id = p_id;
    PERFORM tf_emit('reservation.confirmed', jsonb_build_object(
        'reservation_id', p_id, 'event_id', v_res.event_id, 'user_id', v_res.user_id,
        'seat_ids', to_jsonb(v_res.seat_ids), 'amount_minor', v_res.amount_minor,
        'currency', v_res.currency, 'confirmed_at', tf_time(now())));
    RETURN QUERY SELECT 200, tf_reservation_json(p_id);
END $$;
