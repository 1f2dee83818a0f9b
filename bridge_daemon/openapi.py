"""The bridge's HTTP contract: only what every daemon serves (probes, metrics) (its work is the payments link and RabbitMQ)."""

from deploy.runtime.openapi import document

SPEC = document("TicketFlow bridge daemon",
                "Only probes and metrics: the bridge's work is the payments link (TCP) and RabbitMQ.", {})
