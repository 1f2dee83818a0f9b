"""Time-ordered UUIDs (version 7, RFC 9562): new rows land at the right edge of a B-tree."""

from __future__ import annotations

import os
import time
import uuid


def uuid7() -> uuid.UUID:
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    rand_a = (rand >> 62) & 0xFFF  # 12 random bits after the version
    rand_b = rand & ((1 << 62) - 1)  # 62 random bits after the variant
    return uuid.UUID(int=(ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b)
