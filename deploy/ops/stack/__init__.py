"""The project's own database and broker servers, run as plain processes.

A :class:`~deploy.ops.stack.topology.Topology` is a set of servers plus the
connection settings daemons need; ``ticketflow stack`` brings one up or down.
The local topology (one PostgreSQL, one MariaDB, one RabbitMQ) is the first;
high-availability topologies are more servers of the same kinds, not another tool.
"""
