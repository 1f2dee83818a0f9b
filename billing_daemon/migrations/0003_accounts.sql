-- Accounts and access (issue 9): who may call what, and the trail of who changed money.
-- MariaDB commits DDL implicitly: every statement here can be re-run.

ALTER TABLE users ADD COLUMN IF NOT EXISTS password_hash VARCHAR(255) NULL;
ALTER TABLE users ADD COLUMN IF NOT EXISTS role VARCHAR(16) NOT NULL DEFAULT 'buyer';

-- The organizer of the order's event (from reservation.created): it sees and refunds the order.
ALTER TABLE orders ADD COLUMN IF NOT EXISTS organizer_id VARCHAR(200) NULL;
CREATE INDEX IF NOT EXISTS orders_by_event ON orders (event_id, created_at);

-- Logged-out tokens until they would have expired anyway (then pruned).
CREATE TABLE IF NOT EXISTS revoked_tokens (
    jti        CHAR(36) NOT NULL PRIMARY KEY,
    expires_at DATETIME(6) NOT NULL,
    KEY revoked_by_expiry (expires_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Who changed money or seat ownership, when and why.
CREATE TABLE IF NOT EXISTS audit_log (
    id         CHAR(36) NOT NULL PRIMARY KEY,
    at         DATETIME(6) NOT NULL,
    actor      VARCHAR(200) NOT NULL,
    actor_role VARCHAR(16) NOT NULL,
    action     VARCHAR(64) NOT NULL,
    target     VARCHAR(64) NOT NULL,
    reason     VARCHAR(200) NULL,
    KEY audit_by_target (target, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
