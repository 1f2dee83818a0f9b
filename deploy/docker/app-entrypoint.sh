#!/bin/sh
# The TicketFlow image's entry point: the links' shared secret from a file (docker-compose.yml's init service
# writes one into the keys volume) when it is not given directly, then the command.
set -eu
if [ -z "${TICKETFLOW_LINK_SECRET:-}" ] && [ -n "${TICKETFLOW_LINK_SECRET_FILE:-}" ]; then
    TICKETFLOW_LINK_SECRET=$(cat "$TICKETFLOW_LINK_SECRET_FILE")
    export TICKETFLOW_LINK_SECRET
fi
exec "$@"
