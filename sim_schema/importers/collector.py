"""The cyclic garbage collector paused while an import runs.

An import allocates millions of row tuples, which hold no reference cycles; the
collector's passes over them (each batch is promoted through the generations while it is
alive) cost about as much as reading them: reading and mapping 100,000 farm agent states
took 3.1 us a row with the collector on, 1.6 us with it off (`benchmarks/import_agentfarm.py`,
docs/performance.md). Reference counting still frees every row; only garbage in cycles
(rare here) waits until the import ends. Imports running at once in one process share the
pause: the collector is enabled again when the last ends, if it was enabled before the first.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_running = 0
_was_enabled = False


@contextmanager
def paused() -> Iterator[None]:
    global _running, _was_enabled
    if _running == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _running += 1
    try:
        yield
    finally:
        _running -= 1
        if _running == 0 and _was_enabled:
            gc.enable()
