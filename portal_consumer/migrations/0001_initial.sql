-- Portal consumer: which events were finalized (the dedupe record) and the notifications
-- they produced, committed together so a redelivered message never notifies twice.

CREATE TABLE portal_processed (
    event_id     text PRIMARY KEY,
    type         text NOT NULL,
    order_id     text,
    outcome      text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE portal_notifications (
    id              uuid PRIMARY KEY,
    event_id        text NOT NULL REFERENCES portal_processed (event_id),
    user_id         text NOT NULL,
    kind            text NOT NULL,
    order_id        text,
    payload         jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, kind)
);
CREATE INDEX portal_notifications_by_user ON portal_notifications (user_id, created_at);
CREATE INDEX portal_notifications_undelivered ON portal_notifications (next_attempt_at) WHERE delivered_at IS NULL;
