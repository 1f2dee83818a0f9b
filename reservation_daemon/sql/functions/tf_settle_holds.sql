-- Act on billing's answers in one transaction: expire the released holds, confirm the
-- paid ones (the money is taken: the seat is the buyer's; the portal's confirm later
-- finds it confirmed), and make the rest (charging, or billing unreachable) due again.
CREATE OR REPLACE FUNCTION tf_settle_holds(p_released uuid[], p_paid uuid[], p_kept uuid[])
RETURNS TABLE (expired int, confirmed int)
LANGUAGE plpgsql AS $$
DECLARE
    v_id uuid;
    v_outcome text;
BEGIN
    expired := 0;
    confirmed := 0;
    FOREACH v_id IN ARRAY p_released LOOP
        IF tf_expire(v_id) THEN
            expired := expired + 1;
        END IF;
    END LOOP;
    FOREACH v_id IN ARRAY p_paid LOOP
        SELECT c.outcome INTO v_outcome FROM tf_confirm(v_id) c;
        IF v_outcome = 'confirmed' THEN
            confirmed := confirmed + 1;
        END IF;
    END LOOP;
    UPDATE reservations SET release_check_after = now() WHERE id = ANY (p_kept) AND status = 'held';
    RETURN NEXT;
END $$;
