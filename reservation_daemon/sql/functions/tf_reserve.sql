-- Hold seats, all or nothing, in one statement (one round trip). Returns (outcome, body):
--   held               body: the reservation (tf_reservation_json)
--   seat_not_found     body: {"seat_ids": the ids that name no seat}
--   event_not_found    body: {}
--   seat_not_in_event  body: {}  (seats of several events, or not of p_event)
--   seat_unavailable   body: {"seat_ids": the seats already held or sold}
--   mixed_currencies   body: {}
-- or, with an Idempotency-Key, tf_claim_key's answer (in_progress, key_reused, or the
-- earlier answer under the key).
--
-- p_correlation: the request's correlation id, stored with the outbox row (README, "Tracing").
-- p_event may be NULL (the one-seat /api/reserve): the seat's own event is used. With an
-- idempotency key the answer is recorded in the same transaction; a retry with that key
-- returns it. A hold past its expiry keeps its seats until the sweeper has billing's word
-- that no payment holds them (tf_settle_holds): a seat is never released under a paid buyer.
--
-- CPU per call is what limits holds per second (issue 13; profiled with perf):
-- * plan_cache_mode = force_generic_plan: under the default (auto) every statement with the
--   p_seats array was re-planned at every call, because a generic plan's estimate for
--   "= ANY ($n)" assumes more elements than a custom plan for one seat: planning was more
--   than half of the call. The generic plans are the same index scans.
-- * One statement locks the seats (in id order, so overlapping multi-seat holds queue instead
--   of deadlocking), checks them and gathers what the answer needs, event organizer included;
--   the body is built from those values instead of re-reading through tf_reservation_json (a
--   SQL function, planned at every call). It is what tf_reservation_json reads back: the seat
--   fields shown do not change here, created_at is now() (the column's default).
CREATE OR REPLACE FUNCTION tf_reserve(p_id uuid, p_event uuid, p_seats uuid[], p_user text, p_ttl interval,
                                      p_scope text, p_key text, p_hash text, p_correlation text DEFAULT NULL)
RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_prior_outcome text;
    v_prior_body jsonb;
    v_found int;
    v_events int;
    v_event uuid;
    v_currencies int;
    v_amount bigint;
    v_currency text;
    v_unavailable uuid[];
    v_seat_json jsonb;
    v_organizer text;
    v_outcome text;
    v_body jsonb := '{}';
BEGIN
    IF p_key IS NOT NULL THEN
        SELECT * INTO v_prior_outcome, v_prior_body FROM tf_claim_key(p_scope, p_key, p_hash);
        IF FOUND THEN
            RETURN QUERY SELECT v_prior_outcome, v_prior_body;
            RETURN;
        END IF;
    END IF;

    SELECT count(*), count(DISTINCT s.event_id), min(s.event_id::text)::uuid, count(DISTINCT s.currency),
           sum(s.price_minor), min(s.currency),
           array_agg(s.id ORDER BY s.id) FILTER (WHERE s.status <> 'available'),
           coalesce(jsonb_agg(jsonb_build_object(
                'id', s.id, 'label', s.label, 'section', s.section, 'row', s.row_number,
                'number', s.seat_number, 'price_minor', s.price_minor, 'currency', s.currency)
                ORDER BY s.label), '[]'::jsonb),
           min(e.organizer_id)
      INTO v_found, v_events, v_event, v_currencies, v_amount, v_currency, v_unavailable, v_seat_json, v_organizer
      FROM (SELECT * FROM seats s WHERE s.id = ANY (p_seats) ORDER BY s.id FOR UPDATE) s
      LEFT JOIN events e ON e.id = s.event_id;

    IF v_found < cardinality(p_seats) THEN
        v_outcome := 'seat_not_found';
        v_body := jsonb_build_object('seat_ids', (SELECT jsonb_agg(x) FROM unnest(p_seats) x
                                                    WHERE NOT EXISTS (SELECT 1 FROM seats s WHERE s.id = x)));
    ELSIF p_event IS NOT NULL AND NOT EXISTS (SELECT 1 FROM events e WHERE e.id = p_event) THEN
        v_outcome := 'event_not_found';
    ELSIF v_events > 1 OR (p_event IS NOT NULL AND v_event <> p_event) THEN
        v_outcome := 'seat_not_in_event';
    ELSIF v_unavailable IS NOT NULL THEN
        v_outcome := 'seat_unavailable';
        v_body := jsonb_build_object('seat_ids', to_jsonb(v_unavailable));
    ELSIF v_currencies > 1 THEN
        v_outcome := 'mixed_currencies';
    ELSE
        INSERT INTO reservations (id, event_id, user_id, status, seat_ids, amount_minor, currency, expires_at)
        VALUES (p_id, v_event, p_user, 'held', p_seats, v_amount, v_currency, now() + p_ttl);
        UPDATE seats s SET status = 'held', reservation_id = p_id WHERE s.id = ANY (p_seats);
        v_outcome := 'held';
        v_body := jsonb_build_object(
            'id', p_id, 'event_id', v_event, 'user_id', p_user, 'organizer_id', v_organizer, 'status', 'held',
            'seats', v_seat_json, 'amount_minor', v_amount, 'currency', v_currency,
            'created_at', tf_time(now()), 'expires_at', tf_time(now() + p_ttl));
    END IF;

    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET outcome = v_outcome, body = v_body WHERE k.scope = p_scope AND k.key = p_key;
    END IF;
    -- Last: the event's id is drawn after every lock it depends on is taken (tf_emit).
    IF v_outcome = 'held' THEN
        PERFORM tf_emit('reservation.created', v_body, p_correlation);
    END IF;
    RETURN QUERY SELECT v_outcome, v_body;
END $$;
