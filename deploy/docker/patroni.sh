#!/bin/sh
# Patroni node NODE_NAME of PG_NODES (service names) on ETCD_HOSTS; deploy/conf/patroni.yml and
# patroni-pre-promote.sh rendered at each start, Patroni started through deploy/conf/patroni-launch.py.
set -eu
: "${NODE_NAME:?}" "${PG_NODES:?}" "${ETCD_HOSTS:?}" "${SUPERUSER:?}" "${SUPERUSER_PASSWORD:?}"
home=/var/lib/postgresql/patroni
mkdir -p "$home/data" "$home/log"
chmod 700 "$home/data"
export SCOPE="${SCOPE:-ticketflow}" HOST="$NODE_NAME" LISTEN_HOST=0.0.0.0 CLIENT_CIDR="${CLIENT_CIDR:-0.0.0.0/0}"
export REST_PORT=8008 PG_PORT=5432 DATA_DIR="$home/data" LOG_DIR="$home/log" PGPASS="$home/pgpass"
export BIN_DIR=$(ls -d /usr/lib/postgresql/*/bin | tail -1) PRE_PROMOTE="$home/pre-promote.sh"
export REPLICATION_USER="${REPLICATION_USER:-replicator}" REPLICATION_PASSWORD="${REPLICATION_PASSWORD:-$SUPERUSER_PASSWORD}"
export PGPASSFILE="$home/pre-promote.pgpass" PSQL="$BIN_DIR/psql"
SLOTS=$(for n in $PG_NODES; do [ "$n" = "$NODE_NAME" ] || printf "'%s'," "$n"; done)
export SLOTS="${SLOTS%,}"
printf '127.0.0.1:%s:*:%s:%s\n' "$PG_PORT" "$SUPERUSER" "$SUPERUSER_PASSWORD" > "$PGPASSFILE"
chmod 600 "$PGPASSFILE"
tf-render /etc/ticketflow/conf/patroni.yml "$home/patroni.yml"
tf-render /etc/ticketflow/conf/patroni-pre-promote.sh "$PRE_PROMOTE" 700
export HOME="$home"
exec python3 /etc/ticketflow/conf/patroni-launch.py "$home/patroni.yml"
