"""Time-ordered uuids (version 7, RFC 9562) made on the client.

A logger hands out event ids before the rows are flushed, so callers can link decisions
to events; time order keeps the events primary key growing at its right edge.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT = 0x2 << 62


def uuid7() -> uuid.UUID:
    """48 bits of Unix milliseconds, then 74 random bits (with version and variant bits)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= _VERSION_7 | ((rand >> 62) & 0xFFF) << 64 | _VARIANT | (rand & ((1 << 62) - 1))
    return uuid.UUID(int=value)
