#!/bin/sh
# HAProxy external check of one Galera node, installed beside galera-client.cnf (the check's credentials, a
# [client] user and password) by deploy/ops/stack/haproxy.py; used as is, not a template. HAProxy calls it with
# <proxy addr> <proxy port> <server addr> <server port>. Exit 0 only if the node is Synced
# (wsrep_local_state=4) in the Primary component: mysql-check would also pass a donor or a non-primary node.
status=$(mariadb --defaults-extra-file="$(dirname "$0")/galera-client.cnf" --protocol=tcp -h "$3" -P "$4" --connect-timeout=1 \
    -N -B -e "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state', 'wsrep_cluster_status')" 2>/dev/null) || exit 1
echo "$status" | grep -qx "wsrep_local_state	4" || exit 1
echo "$status" | grep -qx "wsrep_cluster_status	Primary" || exit 1
exit 0
