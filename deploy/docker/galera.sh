#!/bin/sh
# Galera node NAME of NODES (service names, the first is the one that starts a cluster from nothing).
# The rules of deploy/ops/stack/galera.py, for containers that start on their own:
# - a peer answers on its Galera port: join it (SST from a donor that is not the writer -- asked of HAProxy's
#   writer port WRITER, the first node if it does not answer -- when another can serve; IST after a kill:
#   --wsrep-recover gives the start position);
# - nobody answers and there is no data: the first node bootstraps a new cluster (--wsrep-new-cluster), with the
#   stack's user and database; the others wait for it;
# - nobody answers and this node's grastate.dat says safe_to_bootstrap: 1 (it stopped last): it bootstraps;
# - otherwise wait for a peer (after a crash of every node, mark the most advanced node safe_to_bootstrap by hand).
set -eu
: "${NAME:?}" "${NODES:?}" "${DB_USER:?}" "${DB_PASSWORD:?}" "${DB_NAME:?}"
data=/var/lib/mysql/data run=/run/mysqld
mkdir -p "$data" "$run"
export DATADIR="$data" SOCKET="$run/mariadb.sock" HOST="$NAME" BIND_HOST=0.0.0.0 PORT=3306 REPL_PORT=4567
export IST_PORT=4568 SST_PORT=4444 PROVIDER=/usr/lib/galera/libgalera_smm.so CLUSTER="${CLUSTER:-ticketflow-galera}"
PEERS=$(for n in $NODES; do printf '%s:4567,' "$n"; done)
export PEERS="${PEERS%,}"
cnf="$run/galera.cnf"
tf-render /etc/ticketflow/conf/galera.cnf "$cnf"
# The health check is HAProxy's: galera-check.sh (Synced and Primary) beside its credentials.
cp /etc/ticketflow/conf/galera-check.sh "$run/galera-check.sh"
printf '[client]\nuser=%s\npassword=%s\n' "$DB_USER" "$DB_PASSWORD" > "$run/galera-client.cnf"
chmod 600 "$run/galera-client.cnf"
first=${NODES%% *}

peer_up() {
    for n in $NODES; do
        [ "$n" = "$NAME" ] && continue
        timeout 1 bash -c "</dev/tcp/$n/4567" 2>/dev/null && return 0
    done
    return 1
}
state() { sed -n "s/^$1:[[:space:]]*//p" "$data/grastate.dat" 2>/dev/null; }

set -- mariadbd --defaults-file="$cnf"
until peer_up; do
    if [ ! -d "$data/mysql" ] && [ "$NAME" = "$first" ]; then
        mariadb-install-db --no-defaults --datadir="$data" --auth-root-authentication-method=socket \
            --skip-test-db >/dev/null
        cat > "$run/init.sql" <<SQL
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
SQL
        echo "galera: $NAME starts a new cluster (no data, no peer)"
        exec "$@" --wsrep-new-cluster --init-file="$run/init.sql"
    fi
    if [ "$(state safe_to_bootstrap)" = 1 ]; then
        echo "galera: $NAME starts a new cluster (safe_to_bootstrap: 1, no peer)"
        exec "$@" --wsrep-new-cluster
    fi
    echo "galera: $NAME waits for a peer of $NODES"
    sleep 1
done
if [ -d "$data/mysql" ] && [ "$(state seqno)" = "-1" ]; then
    # Killed: recover the committed position so the node rejoins by IST, not a full SST.
    mariadbd --defaults-file="$cnf" --wsrep-recover --log-error="$run/recover.log" || true
    position=$(sed -n 's/.*Recovered position:\{0,1\}[[:space:]]*\([0-9a-f-]\{36\}:[0-9]*\).*/\1/p' "$run/recover.log" | tail -1)
    [ -n "$position" ] && set -- "$@" --wsrep_start_position="$position"
fi
# The donors: every other node but the writer (an rsync donor is blocked, and HAProxy's check would take the
# writes away from it), then any node (the trailing comma). WRITER (host:port of HAProxy's writer port) says which
# node that is now: after a writer kill it is no longer the first node; without an answer, the first node.
writer=""
if [ -n "${WRITER:-}" ]; then
    writer=$(mariadb --defaults-extra-file="$run/galera-client.cnf" --protocol=tcp -h "${WRITER%:*}" \
        -P "${WRITER##*:}" --connect-timeout=2 -N -B -e "SELECT @@wsrep_node_name" 2>/dev/null || true)
fi
[ -n "$writer" ] || writer=$first
donors=$(for n in $NODES; do [ "$n" = "$NAME" ] || [ "$n" = "$writer" ] || printf '%s,' "$n"; done)
echo "galera: $NAME joins the cluster (writer $writer; SST donors $donors)"
exec "$@" --wsrep-sst-donor="$donors"
