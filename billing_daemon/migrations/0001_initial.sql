-- Billing daemon schema (MariaDB, InnoDB, utf8mb4). Times are UTC (the session time zone is +00:00).
-- Every change that downstream cares about writes an outbox row in the same transaction.

CREATE TABLE IF NOT EXISTS users (
    id         CHAR(36) NOT NULL PRIMARY KEY,
    email      VARCHAR(254) NOT NULL,
    name       VARCHAR(200) NOT NULL,
    created_at DATETIME(6) NOT NULL,
    UNIQUE KEY users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- An order is opened by reservation.created; its id is the reservation's id, so a
-- re-delivered event can never open a second order for one hold.
CREATE TABLE IF NOT EXISTS orders (
    id               CHAR(36) NOT NULL PRIMARY KEY,
    user_id          VARCHAR(200) NOT NULL,
    event_id         CHAR(36) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    amount_minor     BIGINT NOT NULL,
    currency         CHAR(3) NOT NULL,
    seats            JSON NOT NULL,
    expires_at       DATETIME(6) NOT NULL,
    charging_attempt CHAR(36) NULL,
    created_at       DATETIME(6) NOT NULL,
    updated_at       DATETIME(6) NOT NULL,
    paid_at          DATETIME(6) NULL,
    KEY orders_by_user (user_id, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS payment_attempts (
    id             CHAR(36) NOT NULL PRIMARY KEY,
    order_id       CHAR(36) NOT NULL,
    status         VARCHAR(16) NOT NULL,
    amount_minor   BIGINT NOT NULL,
    currency       CHAR(3) NOT NULL,
    gateway_ref    VARCHAR(64) NULL,
    decline_reason VARCHAR(200) NULL,
    created_at     DATETIME(6) NOT NULL,
    finished_at    DATETIME(6) NULL,
    KEY attempts_by_order (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS tickets (
    id            CHAR(36) NOT NULL PRIMARY KEY,
    order_id      CHAR(36) NOT NULL,
    event_id      CHAR(36) NOT NULL,
    seat_id       CHAR(36) NOT NULL,
    seat_label    VARCHAR(100) NOT NULL,
    code          CHAR(43) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    status        VARCHAR(8) NOT NULL,
    checked_in_at DATETIME(6) NULL,
    created_at    DATETIME(6) NOT NULL,
    UNIQUE KEY tickets_code (code),
    KEY tickets_by_order (order_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

-- Inbound stream bookkeeping: every event id ever applied (dedupe) and each stream's position.
CREATE TABLE IF NOT EXISTS inbox_events (
    event_id    VARCHAR(64) NOT NULL PRIMARY KEY,
    stream      VARCHAR(64) NOT NULL,
    seq         BIGINT NOT NULL,
    type        VARCHAR(64) NOT NULL,
    outcome     VARCHAR(32) NOT NULL,
    received_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS stream_positions (
    stream   VARCHAR(64) NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
) ENGINE=InnoDB;

-- Outbound stream to the bridge: gap-free sequence via the stream_heads row lock.
CREATE TABLE IF NOT EXISTS stream_heads (
    stream    VARCHAR(64) NOT NULL PRIMARY KEY,
    last_seq  BIGINT NOT NULL DEFAULT 0,
    acked_seq BIGINT NOT NULL DEFAULT 0,
    acked_at  DATETIME(6) NULL
) ENGINE=InnoDB;

INSERT IGNORE INTO stream_heads (stream) VALUES ('payments');

CREATE TABLE IF NOT EXISTS outbox (
    stream     VARCHAR(64) NOT NULL,
    seq        BIGINT NOT NULL,
    event_id   CHAR(36) NOT NULL,
    type       VARCHAR(64) NOT NULL,
    data       JSON NOT NULL,
    created_at DATETIME(6) NOT NULL,
    PRIMARY KEY (stream, seq),
    UNIQUE KEY outbox_event (event_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope        VARCHAR(200) NOT NULL,
    idem_key     VARCHAR(200) NOT NULL,
    request_hash CHAR(64) NOT NULL,
    status       INT NOT NULL,
    body         JSON NULL,
    attempt_id   CHAR(36) NULL,
    created_at   DATETIME(6) NOT NULL,
    PRIMARY KEY (scope, idem_key)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
