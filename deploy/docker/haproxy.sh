#!/bin/sh
# HAProxy before the compose topology: deploy/conf/haproxy.cfg with the PostgreSQL rw/ro ports, one
# haproxy-frontend.cfg per daemon in FRONTENDS ("name=port:host,host;..."), the Galera writer port of
# galera-haproxy.cfg (its external check galera-check.sh), all binding 0.0.0.0 inside the container.
# Servers are service names, re-resolved by podman's/docker's DNS (a restarted container may get a new address).
set -eu
: "${PG_NODES:?}" "${GALERA_NODES:?}" "${DB_USER:?}" "${DB_PASSWORD:?}"
conf=/etc/ticketflow/conf run=/run/haproxy-tf
mkdir -p "$run"
dns="resolvers dns init-addr last,libc,none"
export BIND_HOST=0.0.0.0 STATS_PORT=8404 RW_PORT=5432 RO_PORT=5433 WRITER_PORT=3306
PG_RW_SERVERS=$(for n in $PG_NODES; do printf '    server %s %s:5432 check port 8008 %s\n' "$n" "$n" "$dns"; done)
export PG_RW_SERVERS PG_RO_SERVERS="$PG_RW_SERVERS"
frontends=""
IFS=';'
for entry in ${FRONTENDS:-}; do
    export NAME="${entry%%=*}" PORT="${entry#*=}"
    PORT="${PORT%%:*}"
    hosts="${entry#*:}"
    SERVERS=$(IFS=','; for h in $hosts; do printf '    server %s %s:8080 check %s\n' "$h" "$h" "$dns"; done)
    export SERVERS
    tf-render "$conf/haproxy-frontend.cfg" "$run/frontend.part"
    frontends="$frontends$(cat "$run/frontend.part")
"
done
unset IFS
printf '[client]\nuser=%s\npassword=%s\n' "$DB_USER" "$DB_PASSWORD" > "$run/galera-client.cnf"
cp "$conf/galera-check.sh" "$run/galera-check.sh"
chmod 700 "$run/galera-check.sh"
export CHECK_SCRIPT="$run/galera-check.sh"
SERVERS=$(for n in $GALERA_NODES; do printf '    server %s %s:3306 check %s\n' "$n" "$n" "$dns"; done)
export SERVERS
tf-render "$conf/galera-haproxy.cfg" "$run/galera.part"
export HTTP_FRONTENDS="$frontends$(cat "$run/galera.part")"
tf-render "$conf/haproxy.cfg" "$run/haproxy.cfg"
printf '\nresolvers dns\n    parse-resolv-conf\n    hold valid 1s\n    hold obsolete 1s\n    timeout resolve 1s\n' >> "$run/haproxy.cfg"
haproxy -c -q -f "$run/haproxy.cfg"
exec haproxy -db -f "$run/haproxy.cfg"
