#!/bin/sh
# RabbitMQ node rabbit@NAME; JOIN: the node it joins on a first boot (none for the first node), as
# deploy/ops/stack/rabbitmq_cluster.py forms the local cluster (node 1 alone, the others find it).
set -eu
: "${NAME:?}" "${DB_USER:?}" "${DB_PASSWORD:?}" "${ERLANG_COOKIE:?}"
base=/var/lib/rabbitmq
umask 077
# The package installs a cookie of its own (0400): replace it with the cluster's.
rm -f "$base/.erlang.cookie"
printf '%s' "$ERLANG_COOKIE" > "$base/.erlang.cookie"
chmod 400 "$base/.erlang.cookie"
{
    echo "loopback_users = none"
    echo "default_user = $DB_USER"
    echo "default_pass = $DB_PASSWORD"
    echo "default_vhost = /"
    echo "listeners.tcp.default = 5672"
    echo "log.console = true"
    echo "log.console.level = warning"
    echo "log.file = false"
    echo "vm_memory_high_watermark.relative = 0.2"
    echo "cluster_partition_handling = pause_minority"
    if [ -n "${JOIN:-}" ]; then
        echo "cluster_formation.peer_discovery_backend = classic_config"
        echo "cluster_formation.classic_config.nodes.1 = rabbit@$JOIN"
    fi
} > "$base/rabbitmq.conf"
echo "[]." > "$base/enabled_plugins"
export HOME="$base" RABBITMQ_NODENAME="rabbit@$NAME" RABBITMQ_CONFIG_FILE="$base/rabbitmq.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins" RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log" RUNNING_UNDER_SYSTEMD=1
exec /usr/lib/rabbitmq/bin/rabbitmq-server
