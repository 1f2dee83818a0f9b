"""The shared daemon runtime: the plumbing every TicketFlow daemon is built on.

HTTP conventions (error envelope, limits, rate limits, OpenAPI), authentication,
database access (PostgreSQL and MariaDB pools), migrations, the outbox relay,
idempotency, AMQP, configuration, structured logs and the service lifecycle —
written once here so the daemons never grow their own copies.

It imports ``protocol`` and no daemon and no operator tooling (``deploy.ops``);
the daemons import it.
"""
