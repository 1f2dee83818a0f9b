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


-- The functions of this rule (tf_claim_due, tf_settle_holds, and tf_reserve, tf_confirm and
-- tf_reservation_json without the lazy release) live in reservation_daemon/sql/functions/,
-- applied by the migrator after the migrations.
