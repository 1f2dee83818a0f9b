-- Claim up to p_limit due holds for one billing check. Holds asked about before come
-- after those never asked, so a batch of long-charging payments cannot starve the rest.
CREATE OR REPLACE FUNCTION tf_claim_due(p_limit int, p_lease interval) RETURNS uuid[]
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
