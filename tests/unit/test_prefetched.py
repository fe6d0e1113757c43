"""The importers' read-ahead (`importers.sink.prefetched`): items in order, the source's
error raised in its place, and, whichever way the block ends, the reader thread finished
and the source closed (a farm file's open cursor would keep SQLite's lock otherwise)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Generator

import pytest

from sim_schema.importers.sink import prefetched


class Source:
    """A generator of `count` items that records which threads ran it and its closing."""

    def __init__(self, count: int, fail_at: int | None = None) -> None:
        self.count = count
        self.fail_at = fail_at
        self.closed = False
        self.threads: set[str] = set()
        self.produced = 0

    def items(self) -> Generator[int, None, None]:
        try:
            for i in range(self.count):
                self.threads.add(threading.current_thread().name)
                if i == self.fail_at:
                    raise ValueError(f"bad item {i}")
                self.produced += 1
                yield i
        finally:
            self.closed = True


async def test_items_come_in_order_read_by_another_thread() -> None:
    source = Source(10)
    async with prefetched(source.items(), depth=2) as fetched:
        got = [i async for i in fetched]
    assert got == list(range(10))
    assert source.closed
    assert threading.current_thread().name not in source.threads


async def test_a_source_error_comes_after_the_items_before_it() -> None:
    source = Source(10, fail_at=4)
    got: list[int] = []
    items = source.items()
    with pytest.raises(ValueError, match="bad item 4"):
        async with prefetched(items, depth=2) as fetched:
            async for i in fetched:
                got.append(i)
    assert got == [0, 1, 2, 3]
    assert source.closed


async def test_a_caller_failing_midway_closes_the_source_after_the_thread_ends() -> None:
    source = Source(1000)
    items = source.items()  # held here: only `prefetched` can close it
    with pytest.raises(RuntimeError, match="caller"):
        async with prefetched(items, depth=2) as fetched:
            async for i in fetched:
                if i == 3:
                    raise RuntimeError("caller failed")
    assert source.closed  # suspended mid-way in the thread, closed after it stopped
    produced = source.produced
    assert produced <= 3 + 1 + 2 + 1  # the items taken, the one handed over, `depth` ahead
    await asyncio.sleep(0.05)
    assert source.produced == produced  # nothing reads on after the block
