-- Claim an Idempotency-Key inside the caller's transaction. No row: the key is ours, go
-- ahead (the caller records its answer under the key before it commits). One row: answer
-- it instead: the earlier (outcome, body), 'key_reused' for a key used with a different
-- request, 'in_progress' while another transaction holds the key. The API layer turns
-- outcomes into HTTP answers (reservation_daemon/api.py).
--
-- The transaction-scoped advisory lock is what tells "in progress" from "done": it is
-- released only after the holder's commit is visible, so whoever gets it next sees the
-- recorded answer. The two-key form keeps these locks apart from the relay's and the
-- migrator's one-key locks; a 32-bit hash collision between two keys in flight at the
-- same moment costs one spurious 'in_progress', which the client retries.
CREATE OR REPLACE FUNCTION tf_claim_key(p_scope text, p_key text, p_hash text) RETURNS TABLE (outcome text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    v_prior idempotency_keys;
BEGIN
    -- A finished key answers without the lock, so a burst of retries after the first
    -- answer is never told "in progress". (Only committed rows are visible here, and a
    -- committed row always carries its final answer.)
    SELECT * INTO v_prior FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    IF NOT FOUND THEN
        IF NOT pg_try_advisory_xact_lock(1952867449, hashtext(p_scope || ' ' || p_key)) THEN
            RETURN QUERY SELECT 'in_progress'::text, '{}'::jsonb;
            RETURN;
        END IF;
        INSERT INTO idempotency_keys (scope, key, request_hash, outcome, body)
        VALUES (p_scope, p_key, p_hash, '', '{}') ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN;
        END IF;
        -- It finished between our look and our lock.
        SELECT * INTO v_prior FROM idempotency_keys k WHERE k.scope = p_scope AND k.key = p_key;
    END IF;
    IF v_prior.request_hash <> p_hash THEN
        RETURN QUERY SELECT 'key_reused'::text, '{}'::jsonb;
        RETURN;
    END IF;
    RETURN QUERY SELECT v_prior.outcome, v_prior.body;
END $$;
