"""Ids made on the client: time-ordered uuids (version 7, RFC 9562) for rows written one
at a time, and replay-stable uuids (version 8) for the rows the logger numbers.

A logger hands out event ids before the rows are flushed, so callers can link decisions
to events. Both kinds keep the events primary key growing at its right edge: uuid7 by
time, `replay_id` by step.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VERSION_8 = 0x8 << 76
_VARIANT = 0x2 << 62
_LOW_62 = (1 << 62) - 1
MAX_REPLAY_N = (1 << 28) - 1  # rows of one step a replay id can number


def uuid7() -> uuid.UUID:
    """48 bits of Unix milliseconds, then 74 random bits (with version and variant bits)."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (millis & 0xFFFF_FFFF_FFFF) << 80
    value |= _VERSION_7 | ((rand >> 62) & 0xFFF) << 64 | _VARIANT | (rand & _LOW_62)
    return uuid.UUID(int=value)


def replay_id(simulation_id: str, step: int, n: int, namespace: str = "") -> uuid.UUID:
    """The id of the n-th row logged at `step`: the same in every run that logs the step's
    rows in the same order, so a replayed row is recognised by its key.

    Layout (version 8): 32 bits of step, 28 bits of n (around the version nibble), then 62
    bits of a BLAKE2b hash of the simulation id: ids sort by (step, n) within a simulation.
    `namespace` (a table's, `Record.replay_namespace`) enters the hash, so the n-th decision
    of a step never has the id of the n-th event; events have none (their ids predate it).
    """
    if not 0 <= step < 1 << 32 or not 0 <= n <= MAX_REPLAY_N:
        raise ValueError(f"replay_id: step {step} or n {n} out of range")
    text = f"{namespace}\x00{simulation_id}" if namespace else simulation_id
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8)
    value = step << 96 | (n >> 12) << 80 | _VERSION_8 | (n & 0xFFF) << 64 | _VARIANT
    value |= int.from_bytes(digest.digest(), "big") & _LOW_62
    return uuid.UUID(int=value)
