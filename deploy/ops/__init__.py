"""Operator tooling: what a person (or ``make``) runs to set up, operate and measure TicketFlow.

- ``cli``         the ``ticketflow`` command
- ``daemons``     the daemons and links the tooling knows (one registry)
- ``stack``       the project's own PostgreSQL / MariaDB / RabbitMQ servers, in topologies
- ``supervisor``  ``ticketflow run all`` / ``ticketflow stop``
- ``status``      servers, daemons, link lags, stuck messages
- ``bench``       simulated buyers, figures beside a baseline
- ``linkctl``     ``ticketflow link advance``: the operator's repair of a link

It sits on top: it may import the daemons, but only to call their public
interfaces (their stores' methods, their settings, their HTTP APIs) — never
their tables — and nothing but the tests imports it.
"""
