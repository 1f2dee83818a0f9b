"""A bare link receiver in its own process, so a test can measure what hostile peers cost it.

Prints its port alone on a line of stdout (log lines come first), then serves until killed. Settings come
from the daemons' ``TICKETFLOW_LINK_*`` variables.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

from deploy.runtime.config import (link_handshake_timeout_setting, link_max_pending_per_address_setting,
                                   link_max_pending_setting, link_secret_setting, link_tls_cert_setting,
                                   link_tls_key_setting, load, receiver_link)
from protocol.receiver import Receiver
from tests.helpers import MemoryStore


@dataclass(frozen=True)
class Settings:
    link_secret: bytes = link_secret_setting()
    link_handshake_timeout: float = link_handshake_timeout_setting()
    link_max_pending: int = link_max_pending_setting()
    link_max_pending_per_address: int = link_max_pending_per_address_setting()
    link_tls_cert: str = link_tls_cert_setting()
    link_tls_key: str = link_tls_key_setting()


async def main() -> None:
    receiver = Receiver({"s": MemoryStore()}, receiver_link(load(Settings), "r"))
    await receiver.start()
    print(receiver.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
