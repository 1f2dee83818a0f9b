-- Issue 12: billing's single active relay is chosen by a lease row, not by GET_LOCK.
--
-- GET_LOCK lives in one MariaDB server's memory: under Galera two billing replicas on two
-- nodes would both hold "the" lock. A row is replicated and its UPDATEs certified
-- cluster-wide, so a compare-and-set on it has one winner (billing_daemon/store/lease.py).
-- - relay_leases: one row per stream; owner (a random id per attempt), epoch (+1 on every
--   take: the fencing token), expires_at on the database's clock (NOW(6) is the only clock).
--   Free when expires_at <= NOW(6).
-- - stream_heads.relay_epoch: the epoch of the lease that may number the stream. The take
--   writes it in the same transaction as the lease; the sequencer reads it under its
--   FOR UPDATE and numbers nothing for another epoch (billing_daemon/store/outbox.py), so a
--   deposed relay's late numbering is refused, on one node by the row lock, across Galera
--   nodes by certification (both transactions write this row).
CREATE TABLE IF NOT EXISTS relay_leases (
    stream     VARCHAR(64) NOT NULL PRIMARY KEY,
    owner      VARCHAR(64) NOT NULL DEFAULT '',
    epoch      BIGINT NOT NULL DEFAULT 0,
    expires_at DATETIME(6) NOT NULL DEFAULT '1970-01-02 00:00:00',
    taken_at   DATETIME(6) NULL
) ENGINE=InnoDB;

INSERT IGNORE INTO relay_leases (stream) VALUES ('payments');

ALTER TABLE stream_heads ADD COLUMN IF NOT EXISTS relay_epoch BIGINT NOT NULL DEFAULT 0;
