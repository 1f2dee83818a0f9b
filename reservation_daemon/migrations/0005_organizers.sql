-- Who organizes each event (issue 9): organizers see the reservations and orders of their
-- own events only. Events created by a service (the demo, tools) have none.
ALTER TABLE events ADD COLUMN organizer_id text;
-- (tf_reservation_json names it: reservation_daemon/sql/functions/tf_reservation_json.sql)

-- Who changed seat ownership (cancel, confirm, release), when and why.
CREATE TABLE audit_log (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor      text NOT NULL,
    actor_role text NOT NULL,
    action     text NOT NULL,
    target     uuid NOT NULL,
    reason     text
);
CREATE INDEX audit_by_target ON audit_log (target, at);
