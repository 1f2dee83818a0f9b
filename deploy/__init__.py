"""Operator tooling and the runtime plumbing every TicketFlow daemon shares.

- ``deploy.cli``      the ``ticketflow`` command
- ``deploy.stack``    the project's own PostgreSQL / MariaDB / RabbitMQ servers
- ``deploy.runtime``  configuration, logging and retry helpers used by all daemons
"""
