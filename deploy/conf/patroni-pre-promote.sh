#!/bin/sh
# Patroni's pre_promote hook for one node of the HA topology (rendered by deploy/ops/stack/patroni.py; its
# placeholders, dollar-name in braces, are filled in at `stack up`). Patroni runs it after this node won the
# leader lock and before it promotes PostgreSQL.
#
# Why: with use_slots every standby streams through a physical slot named after it, and a newly promoted
# Patroni creates those slots only in its first HA cycle after the promotion finished (its promote task polls
# pg_controldata once a second, then up to loop_wait more): about 2 s in which every standby's WAL receiver
# is refused ("replication slot does not exist"). Under synchronous_mode_strict the new primary's commits wait
# for a standby to stream, so that wait was the client-visible write gap's largest part after the lock's TTL.
# Creating the slots here, on the standby about to be promoted (physical slots may be created during
# recovery; they survive the promotion), lets the standbys stream from the new primary the moment it promotes.
# Patroni then finds them in place (it creates with WHERE NOT EXISTS) and drops any it does not want.
#
# Never in the way: a non-zero exit would make Patroni give up the lock and not promote, so every failure
# here is ignored (Patroni then creates the slots itself, one cycle later), and it is bounded to 3 s.
PGPASSFILE='${PGPASSFILE}' PGCONNECT_TIMEOUT=2 timeout 3 '${PSQL}' -X -q -w -h 127.0.0.1 -p ${PG_PORT} \
    -U '${SUPERUSER}' -d postgres -v ON_ERROR_STOP=1 -c "SET statement_timeout = '2s'" -c "
    SELECT pg_catalog.pg_create_physical_replication_slot(name, true)
      FROM unnest(ARRAY[${SLOTS}]::text[]) AS name
     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = name)" \
    >/dev/null 2>&1
exit 0
