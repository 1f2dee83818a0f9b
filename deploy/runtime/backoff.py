"""The daemons' retry backoff is the link protocol's (PROTOCOL.md section 8): one rule, one home."""

from protocol.backoff import Backoff

__all__ = ["Backoff"]
