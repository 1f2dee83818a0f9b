-- Refunds as records of their own, and what the payment resolver needs.

-- One row per refund that moved money back at the gateway. Its id is what the
-- portal names when it gives the seats back; actor and reason are the audit
-- trail (who asked, and why). One refund per attempt: refunds are whole, and a
-- refund path that runs twice finds the row and changes nothing.
CREATE TABLE IF NOT EXISTS refunds (
    id           CHAR(36) NOT NULL PRIMARY KEY,
    order_id     CHAR(36) NOT NULL,
    attempt_id   CHAR(36) NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency     CHAR(3) NOT NULL,
    reason       VARCHAR(200) NOT NULL,
    actor        VARCHAR(200) NULL,
    created_at   DATETIME(6) NOT NULL,
    gateway_ref  VARCHAR(64) NULL,
    UNIQUE KEY refunds_attempt (attempt_id),
    KEY refunds_by_order (order_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- The billing process that started an attempt (its id names a MariaDB lock it
-- holds while alive), so a retry or the resolver can tell an attempt still
-- being charged from one whose request died with its process.
ALTER TABLE payment_attempts ADD COLUMN IF NOT EXISTS owner VARCHAR(64) NULL;

-- The resolver's scan: attempts still charging, oldest first.
CREATE INDEX IF NOT EXISTS attempts_by_status ON payment_attempts (status, created_at);

-- Recording an attempt's outcome answers every key that waits on it.
CREATE INDEX IF NOT EXISTS keys_by_attempt ON idempotency_keys (attempt_id);
