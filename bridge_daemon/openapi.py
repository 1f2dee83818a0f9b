"""The bridge's HTTP contract: only the probes every daemon serves (its work is the payments link and RabbitMQ)."""

from deploy.runtime.openapi import document

SPEC = document("TicketFlow bridge daemon",
                "Only probes: the bridge's work is the payments link (TCP) and RabbitMQ.", {})
