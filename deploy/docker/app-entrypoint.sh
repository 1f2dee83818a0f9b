#!/bin/sh
# The TicketFlow image's entry point: the links' shared secret from a file when it is not given directly, then
# the command. docker-compose.yml's init service writes that file into the keys volume LAST (after the token keys
# and the database), so a daemon waits for it (TICKETFLOW_LINK_SECRET_WAIT seconds, default 600): compose engines
# that cannot wait for the init service to complete (podman-compose on podman < 4.6) still start in order.
set -eu
if [ -z "${TICKETFLOW_LINK_SECRET:-}" ] && [ -n "${TICKETFLOW_LINK_SECRET_FILE:-}" ]; then
    waited=0
    until [ -s "$TICKETFLOW_LINK_SECRET_FILE" ]; do
        if [ "$waited" -ge "${TICKETFLOW_LINK_SECRET_WAIT:-600}" ]; then
            echo "tf-entrypoint: $TICKETFLOW_LINK_SECRET_FILE never appeared (is the init service running?)" >&2
            exit 1
        fi
        [ "$waited" = 0 ] && echo "tf-entrypoint: waiting for $TICKETFLOW_LINK_SECRET_FILE (the init service)" >&2
        sleep 1
        waited=$((waited + 1))
    done
    TICKETFLOW_LINK_SECRET=$(cat "$TICKETFLOW_LINK_SECRET_FILE")
    export TICKETFLOW_LINK_SECRET
fi
exec "$@"
