"""The event queue with several workers (migration 0007): claims, leases, retries, dead
letters, stale completions, against a real server with truly concurrent connections."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import psycopg
import pytest
from helpers import add_simulation

from sim_schema import repositories as repo
from sim_schema.errors import ConfigurationError, LifecycleError
from sim_schema.models import EventCreate
from sim_schema.store import Store

Conn = psycopg.AsyncConnection[Any]


async def _events(conn: Conn, n: int, **kw: Any) -> list[uuid.UUID]:
    """n events of simulation s1 in one statement (step i // 100, priority from `kw`)."""
    ids = [uuid.uuid4() for _ in range(n)]
    await conn.execute(
        "INSERT INTO events (simulation_id, event_id, step, event_type, priority)"
        " SELECT 's1', e, i / 100, %s, %s FROM unnest(%s::uuid[]) WITH ORDINALITY AS t(e, i)",
        (kw.get("event_type", "ask"), kw.get("priority", 0), ids),
    )
    return ids


async def _now_past(conn: Conn, simulation_id: str, ids: list[uuid.UUID]) -> bool:
    cur = await conn.execute(
        "SELECT bool_and(claimed_until < now()) FROM events"
        " WHERE simulation_id = %s AND event_id = ANY(%s)",
        (simulation_id, ids),
    )
    row = await cur.fetchone()
    return bool(row and row[0])


async def _wait_for_expiry(conn: Conn, ids: list[uuid.UUID]) -> None:
    """Until the server's clock is past every lease (the test never guesses a duration)."""
    for _ in range(200):
        if await _now_past(conn, "s1", ids):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the leases never ended")


async def test_four_workers_handle_every_event_exactly_once(store: Store, aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    created = await _events(aconn, 2000)
    handled: list[tuple[str, uuid.UUID]] = []

    async def worker(name: str) -> None:
        async with store.connection() as conn:
            while batch := await repo.claim_events(
                conn, "s1", worker=name, limit=25, lease_seconds=60
            ):
                for event in batch:
                    assert event.claimed_by == name and event.attempts == 1
                    handled.append((name, event.event_id))
                    await asyncio.sleep(0)  # let the other workers in between
                    await repo.mark_event_processed(
                        conn, "s1", event.event_id, {"by": name}, worker=name
                    )

    await asyncio.gather(*(worker(f"w{i}") for i in range(4)))

    counts = Counter(event_id for _, event_id in handled)
    assert [e for e, n in counts.items() if n > 1] == []  # no duplicates
    assert set(counts) == set(created)  # none lost
    assert len({name for name, _ in handled}) > 1  # the work was really shared
    stored = await repo.list_events(aconn, "s1")
    by = dict((e, name) for name, e in handled)
    assert all(e.processed and e.claimed_until is None for e in stored)
    assert all(e.processing_result == {"by": by[e.event_id]} for e in stored)
    assert all(e.claimed_by == by[e.event_id] for e in stored)
    assert await repo.claim_events(aconn, "s1", worker="late", limit=10) == []


async def test_claims_follow_priority_then_step_and_skip_what_others_hold(
    aconn: Conn, dsn: str
) -> None:
    await add_simulation(aconn, "s1")
    low = await _events(aconn, 3)
    urgent = await _events(aconn, 2, priority=5)
    other = await _events(aconn, 2, event_type="tell")
    first = await repo.claim_events(aconn, "s1", worker="a", limit=3)
    assert [e.event_id for e in first[:2]] == sorted(urgent)  # same step and time: by id
    assert [e.priority for e in first] == [5, 5, 0]
    rest = await repo.claim_events(aconn, "s1", worker="b", limit=10, event_types=["ask"])
    assert {e.event_id for e in rest} | {e.event_id for e in first} == set(low) | set(urgent)
    assert not {e.event_id for e in rest} & {e.event_id for e in first}
    told = await repo.claim_events(aconn, "s1", worker="c", limit=10)
    assert {e.event_id for e in told} == set(other)

    # A claim in progress in another transaction is skipped, not waited for.
    await _events(aconn, 2)
    async with await psycopg.AsyncConnection.connect(
        dsn, options="-c search_path=sim"
    ) as holder:
        await holder.execute(
            "SELECT 1 FROM events WHERE NOT processed AND claimed_by IS NULL FOR UPDATE"
        )
        assert await repo.claim_events(aconn, "s1", worker="d", limit=10) == []
        await holder.rollback()
    assert len(await repo.claim_events(aconn, "s1", worker="d", limit=10)) == 2


async def test_a_dead_workers_events_are_claimed_again_after_its_lease(
    aconn: Conn, store: Store
) -> None:
    await add_simulation(aconn, "s1")
    await _events(aconn, 10)
    async with store.connection() as dying:
        lost = await repo.claim_events(dying, "s1", worker="dies", limit=4, lease_seconds=0.3)
    # ... and never comes back. Until its lease ends, nobody else gets its events:
    others = await repo.claim_events(aconn, "s1", worker="lives", limit=10, lease_seconds=60)
    lost_ids = [e.event_id for e in lost]
    assert len(others) == 6 and not {e.event_id for e in others} & set(lost_ids)
    for e in others:
        await repo.mark_event_processed(aconn, "s1", e.event_id, "ok", worker="lives")
    await _wait_for_expiry(aconn, lost_ids)

    again = await repo.claim_events(aconn, "s1", worker="lives", limit=10, lease_seconds=60)
    assert sorted(e.event_id for e in again) == sorted(lost_ids)
    assert all(e.attempts == 2 and e.claimed_by == "lives" for e in again)
    for e in again:
        await repo.mark_event_processed(aconn, "s1", e.event_id, "second try", worker="lives")

    # The dead worker comes back: its completion is refused and overwrites nothing.
    with pytest.raises(LifecycleError, match="already processed by worker 'lives'"):
        await repo.mark_event_processed(aconn, "s1", lost_ids[0], "stale", worker="dies")
    done = await repo.get_event(aconn, "s1", lost_ids[0])
    assert (done.processing_result, done.claimed_by) == ("second try", "lives")
    events = await repo.list_events(aconn, "s1")
    assert all(e.processed for e in events) and len(events) == 10


async def test_a_stale_worker_cannot_complete_an_event_claimed_again(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    [event_id] = await _events(aconn, 1)
    await repo.claim_events(aconn, "s1", worker="slow", lease_seconds=0.2)
    await _wait_for_expiry(aconn, [event_id])
    [taken] = await repo.claim_events(aconn, "s1", worker="fast", lease_seconds=60)
    with pytest.raises(LifecycleError, match=r"claimed by worker 'fast'.*not by 'slow'"):
        await repo.mark_event_processed(aconn, "s1", event_id, "stale", worker="slow")
    with pytest.raises(LifecycleError, match="claimed by worker 'fast'"):
        await repo.fail_event(aconn, "s1", event_id, "stale error", worker="slow")
    with pytest.raises(LifecycleError, match="worker 'fast' holds its claim"):
        await repo.mark_event_processed(aconn, "s1", event_id, "no worker")
    unchanged = await repo.get_event(aconn, "s1", event_id)
    assert unchanged == taken  # nothing of the refused calls was written
    done = await repo.mark_event_processed(aconn, "s1", event_id, {"ok": 1}, worker="fast")
    assert (done.processed, done.processing_result, done.claimed_by) == (True, {"ok": 1}, "fast")


async def test_failures_are_retried_then_dead_lettered(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    [event_id] = await _events(aconn, 1)
    for attempt in (1, 2):
        [e] = await repo.claim_events(aconn, "s1", worker="w", max_attempts=3)
        assert e.attempts == attempt
        back = await repo.fail_event(aconn, "s1", event_id, f"boom {attempt}", worker="w",
                                     max_attempts=3)
        assert (back.claimed_by, back.dead_lettered_at, back.last_error) == (
            None, None, f"boom {attempt}")
    [e] = await repo.claim_events(aconn, "s1", worker="w", max_attempts=3)
    dead = await repo.fail_event(aconn, "s1", event_id, "boom 3", worker="w", max_attempts=3)
    assert dead.dead_lettered_at is not None and dead.attempts == 3
    assert (dead.claimed_by, dead.last_error, dead.processed) == ("w", "boom 3", False)
    assert await repo.claim_events(aconn, "s1", worker="w", max_attempts=3) == []
    assert await repo.list_unprocessed_events(aconn, "s1") == []
    assert [e.event_id for e in await repo.list_events(aconn, "s1", dead_lettered=True)] == [
        event_id
    ]
    with pytest.raises(LifecycleError, match=r"dead-lettered .* after 3 attempt"):
        await repo.mark_event_processed(aconn, "s1", event_id, "late", worker="w")

    revived = await repo.requeue_event(aconn, "s1", event_id)
    assert (revived.dead_lettered_at, revived.attempts, revived.last_error) == (None, 0, "boom 3")
    [e] = await repo.claim_events(aconn, "s1", worker="w2")
    assert e.attempts == 1
    with pytest.raises(LifecycleError, match="not dead-lettered"):
        await repo.requeue_event(aconn, "s1", event_id)


async def test_fail_without_retry_and_with_a_delay(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    first, second = await _events(aconn, 2)
    await repo.claim_events(aconn, "s1", worker="w", limit=2)
    given_up = await repo.fail_event(aconn, "s1", first, "bad input", worker="w", retry=False)
    assert given_up.dead_lettered_at is not None and given_up.attempts == 1
    later = await repo.fail_event(aconn, "s1", second, "rate limited", worker="w",
                                  retry_delay=0.3)
    assert later.claimed_by is None and later.claimed_until is not None
    assert await repo.claim_events(aconn, "s1", worker="w") == []  # not before the delay
    await _wait_for_expiry(aconn, [second])
    [e] = await repo.claim_events(aconn, "s1", worker="w")
    assert (e.event_id, e.attempts) == (second, 2)


async def test_a_lease_that_ends_on_the_last_attempt_dead_letters(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    [event_id] = await _events(aconn, 1)
    await repo.claim_events(aconn, "s1", worker="crashes", lease_seconds=0.2, max_attempts=1)
    await _wait_for_expiry(aconn, [event_id])
    assert await repo.claim_events(aconn, "s1", worker="next", max_attempts=1) == []
    dead = await repo.get_event(aconn, "s1", event_id)
    assert dead.dead_lettered_at is not None and dead.attempts == 1
    assert dead.last_error == (
        "given up after 1 attempts: the last lease (crashes) ended without a result"
    )


async def test_a_claim_returns_a_full_batch_past_dead_letters(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    doomed = await _events(aconn, 3, priority=9)
    fine = await _events(aconn, 3)
    await repo.claim_events(aconn, "s1", worker="x", limit=3, lease_seconds=0.2, max_attempts=1)
    await _wait_for_expiry(aconn, doomed)
    got = await repo.claim_events(aconn, "s1", worker="y", limit=3, max_attempts=1)
    assert sorted(e.event_id for e in got) == sorted(fine)


async def test_release_and_extend(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    [event_id] = await _events(aconn, 1)
    [e] = await repo.claim_events(aconn, "s1", worker="w", lease_seconds=5)
    longer = await repo.extend_lease(aconn, "s1", event_id, worker="w", lease_seconds=600)
    assert e.claimed_until is not None and longer.claimed_until is not None
    assert longer.claimed_until > e.claimed_until
    with pytest.raises(LifecycleError, match="not by 'other'"):
        await repo.extend_lease(aconn, "s1", event_id, worker="other", lease_seconds=600)
    released = await repo.release_event(aconn, "s1", event_id, worker="w")
    assert (released.claimed_by, released.claimed_until, released.attempts) == (None, None, 0)
    with pytest.raises(LifecycleError, match="does not hold its claim"):
        await repo.release_event(aconn, "s1", event_id, worker="w")
    [again] = await repo.claim_events(aconn, "s1", worker="v")
    assert again.attempts == 1


async def test_completion_without_a_worker_keeps_the_single_process_api(aconn: Conn) -> None:
    await add_simulation(aconn, "s1")
    event = await repo.create_event(aconn, EventCreate(simulation_id="s1", step=0, event_type="x"))
    done = await repo.mark_event_processed(aconn, "s1", event.event_id, [1])
    assert (done.processed, done.claimed_by, done.attempts) == (True, None, 0)
    with pytest.raises(LifecycleError, match="already processed"):
        await repo.mark_event_processed(aconn, "s1", event.event_id, [2])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"worker": ""}, "worker must be a non-empty name"),
        ({"worker": "w", "limit": 0}, "limit must be an int >= 1"),
        ({"worker": "w", "lease_seconds": 0}, "lease_seconds must be > 0"),
        ({"worker": "w", "max_attempts": 0}, "max_attempts must be an int >= 1"),
    ],
)
async def test_claim_options_are_checked(
    aconn: Conn, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await repo.claim_events(aconn, "s1", **options)
