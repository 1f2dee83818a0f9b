-- Billing's word on releasing a hold (issue 9, hole 3). The reservation daemon asks billing
-- before it releases a held reservation; when billing has no order for it yet (the
-- reservation stream is behind), it records the release here, so that the order, when it
-- arrives, is opened cancelled and can never be paid.
CREATE TABLE IF NOT EXISTS released_holds (
    order_id    CHAR(36) NOT NULL PRIMARY KEY,
    released_at DATETIME(6) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;
