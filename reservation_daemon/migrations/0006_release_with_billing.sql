-- A hold is released only with billing's word (issue 9, hole 3).
--
-- Billing is the authority on whether a hold has a payment. Before a held reservation
-- is released (the sweeper's expiry, the buyer's DELETE), the daemon asks billing, and
-- billing answers per hold, atomically with its own order row: released (no payment
-- charging or taken; billing cancelled the order, so none can start), paid (the money is
-- taken: the hold is confirmed instead), or charging (keep it, ask again). Nothing in SQL
-- releases a hold on the clock alone any more: the lazy release inside tf_reserve and
-- tf_confirm is gone, and tf_expire_due gives way to claim / settle in two steps around
-- the call to billing.

-- When the sweeper may (next) ask billing about a due hold: a replica claims a batch for a
-- short lease, so replicas never ask about the same hold at once.
ALTER TABLE reservations ADD COLUMN release_check_after timestamptz;

DROP FUNCTION tf_expire_due(int);

-- Claim up to p_limit due holds for one billing check. Holds asked about before come
-- after those never asked, so a batch of long-charging payments cannot starve the rest.
CREATE FUNCTION tf_claim_due(p_limit int, p_lease interval) RETURNS uuid[]
LANGUAGE sql AS $$
    WITH due AS (
        SELECT id FROM reservations
         WHERE status = 'held' AND expires_at <= now()
           AND (release_check_after IS NULL OR release_check_after <= now())
         ORDER BY coalesce(release_check_after, expires_at) LIMIT p_limit
           FOR UPDATE SKIP LOCKED),
    claimed AS (
        UPDATE reservations r SET release_check_after = now() + p_lease FROM due WHERE r.id = due.id
        RETURNING r.id)
    SELECT coalesce(array_agg(id), '{}') FROM claimed
$$;

-- Act on billing's answers in one transaction: expire the released holds, confirm the
-- paid ones (the money is taken: the seat is the buyer's; the portal's confirm later
-- finds it confirmed), and make the rest (charging, or billing unreachable) due again.
CREATE FUNCTION tf_settle_holds(p_released uuid[], p_paid uuid[], p_kept uuid[])
RETURNS TABLE (expired int, confirmed int)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_status int;
BEGIN
    expired := 0;
    confirmed := 0;
    FOREACH v_id IN ARRAY p_released LOOP
        IF tf_expire(v_id) THEN
            expired := expired + 1;
        END IF;
    END LOOP;
    FOREACH v_id IN ARRAY p_paid LOOP
        SELECT c.status INTO v_status FROM tf_confirm(v_id) c;
        IF v_status = 200 THEN
            confirmed := confirmed + 1;
        END IF;
    END LOOP;
    UPDATE reservations SET release_check_after = now() WHERE id = ANY (p_kept) AND status = 'held';
    RETURN NEXT;
END $$;

-- A live hold becomes a sale even past its expiry: a hold still held has not been released
-- with billing's word, and the service confirms only after billing took the payment.
CREATE OR REPLACE FUNCTION tf_confirm(p_id uuid) RETURNS TABLE (status int, body jsonb)
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

-- A reservation shows its real status: a hold past its expiry stays "held" until it is
-- released (it may be paid and about to be confirmed). As in 0005 otherwise.
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

-- Holding seats no longer releases a stale hold on the spot (as in 0003 otherwise).
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

    -- A hold past its expiry keeps its seats until the sweeper has billing's word that no
    -- payment holds them (tf_settle_holds): a seat is never released under a paid buyer.

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
