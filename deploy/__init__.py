"""Everything around the daemons, in three layers that depend one way only.

::

    deploy.ops      operator tooling: the ``ticketflow`` CLI, the local server stack and its
                    topologies, the supervisor (``run all`` / ``stop``), status, bench, link repair.
       │            Reaches the daemons only through their public interfaces (store methods, HTTP).
       ▼            Nothing imports it but the tests.
    the daemons     reservation_daemon, billing_daemon, bridge_daemon, portal_consumer; none
       │            imports another.
       ▼
    deploy.runtime  the shared daemon runtime: HTTP conventions, auth, database access,
       │            migrations, outbox relay, idempotency, AMQP, config, logs, service lifecycle.
       ▼            Imports no daemon and no tooling.
    protocol        the link wire protocol; imports nothing of the project.

``deploy/conf/`` holds deployment configuration files (not Python) that the
high-availability and container setups share. The import rules are checked by
import-linter (``[tool.importlinter]`` in pyproject.toml; ``make test`` runs it).
"""
