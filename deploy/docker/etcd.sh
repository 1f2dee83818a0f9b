#!/bin/sh
# etcd member NAME of MEMBERS (space-separated service names); deploy/conf/etcd.yml rendered at each start.
set -eu
: "${NAME:?}" "${MEMBERS:?}"
export DATA_DIR=/var/lib/etcd/data HOST="$NAME" LISTEN_HOST=0.0.0.0 CLIENT_PORT=2379 PEER_PORT=2380
export CLUSTER_TOKEN="${CLUSTER_TOKEN:-ticketflow-compose}"
INITIAL_CLUSTER=$(for m in $MEMBERS; do printf '%s=http://%s:2380,' "$m" "$m"; done)
export INITIAL_CLUSTER="${INITIAL_CLUSTER%,}"
tf-render /etc/ticketflow/conf/etcd.yml /var/lib/etcd/etcd.yml
exec etcd --config-file /var/lib/etcd/etcd.yml
