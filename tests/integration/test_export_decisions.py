"""The training-data export: ordered by (simulation, step, created_at, decision_id), with
the agent's and the event's type, as JSONL, one JSON array or CSV (JSON columns as JSON
text), from sync and async code alike."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import add_simulation

from sim_schema import cli
from sim_schema import repositories as repo
from sim_schema.errors import ConfigurationError
from sim_schema.models import AgentCreate, AgentDecisionCreate, EventCreate
from sim_schema.read.export import (
    DECISION_COLUMNS,
    export_decisions,
    export_decisions_async,
    file_sha256,
)

Conn = psycopg.AsyncConnection[Any]
ACTIONS: list[Any] = ["move", {"go": "north", "speed": 2}, None, [1, "two"], 3.5, True]


async def _decisions(aconn: Conn) -> list[dict[str, Any]]:
    """Decisions of two simulations, made out of step order; what the export must say."""
    expected = []
    for sim in ("s2", "s1"):  # the later simulation first
        await add_simulation(aconn, sim)
        await repo.register_agents(aconn, [
            AgentCreate(simulation_id=sim, agent_id="a1", agent_type="citizen"),
            AgentCreate(simulation_id=sim, agent_id="a2", agent_type="mayor"),
        ])
        event = await repo.create_event(
            aconn, EventCreate(simulation_id=sim, step=0, event_type="vote"))
        for n, step in enumerate((2, 0, 1, 0)):  # two decisions at step 0, made apart
            agent = ("a1", "a2")[n % 2]
            d = await repo.record_decision(aconn, AgentDecisionCreate(
                simulation_id=sim, step=step, agent_id=agent,
                event_id=event.event_id if n % 2 else None, prompt=f'say "{n}", please',
                output=f"line\nbreak {n}", context={"n": n, "txt": "ü, \"q\""},
                action=ACTIONS[n], processing_time=0.5 * n))
            if n == 1:
                d = await repo.add_decision_feedback(
                    aconn, sim, d.decision_id, feedback="good", rating=4.5, reason="clear")
            expected.append({
                "simulation_id": sim, "step": step, "created_at": d.created_at,
                "decision_id": d.decision_id, "agent_id": agent,
                "agent_type": {"a1": "citizen", "a2": "mayor"}[agent],
                "event_id": d.event_id, "event_type": "vote" if d.event_id else None,
                "prompt": d.prompt, "output": d.output, "context": d.context,
                "action": d.action, "processing_time": d.processing_time,
                "feedback": d.feedback, "rating": d.rating, "reason": d.reason,
                "feedback_at": d.feedback_at,
            })
    expected.sort(key=lambda r: (r["simulation_id"], r["step"], r["created_at"],
                                 r["decision_id"]))
    return expected


def _as_json(record: dict[str, Any]) -> dict[str, Any]:
    """A record as JSON gives it back: ids and times as text."""
    out = dict(record)
    for key in ("decision_id", "event_id"):
        out[key] = None if out[key] is None else str(out[key])
    for key in ("created_at", "feedback_at"):
        out[key] = None if out[key] is None else out[key]
    return out


def _parsed(record: dict[str, Any]) -> dict[str, Any]:
    """A record read from JSON, times parsed back."""
    out = dict(record)
    for key in ("created_at", "feedback_at"):
        if out[key] is not None:
            out[key] = datetime.fromisoformat(out[key])
    return out


async def test_jsonl_is_ordered_and_complete(aconn: Conn, dsn: str, tmp_path: Path) -> None:
    expected = await _decisions(aconn)
    out = tmp_path / "new" / "dir" / "train.jsonl"  # directories are made
    with psycopg.connect(dsn) as conn:
        record = export_decisions(conn, out)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert record.rows == len(lines) == 8
    assert all(list(line) == list(DECISION_COLUMNS) for line in lines)
    assert [_parsed(line) for line in lines] == [_as_json(r) for r in expected]
    assert [(r["simulation_id"], r["step"]) for r in lines] == [
        ("s1", 0), ("s1", 0), ("s1", 1), ("s1", 2), ("s2", 0), ("s2", 0), ("s2", 1), ("s2", 2)]


async def test_a_json_array_holds_the_same_records(
    aconn: Conn, dsn: str, tmp_path: Path
) -> None:
    await _decisions(aconn)
    with psycopg.connect(dsn) as conn:
        export_decisions(conn, tmp_path / "d.jsonl")
        record = export_decisions(conn, tmp_path / "d.json", fmt="json", simulations=["s1"])
        empty = export_decisions(conn, tmp_path / "none.json", fmt="json", agents=["nobody"])
    lines = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert json.loads((tmp_path / "d.json").read_text()) == lines[:4]
    assert record.rows == 4
    assert (empty.rows, json.loads((tmp_path / "none.json").read_text())) == (0, [])


async def test_csv_writes_json_columns_as_json_text(
    aconn: Conn, dsn: str, tmp_path: Path
) -> None:
    expected = await _decisions(aconn)
    with psycopg.connect(dsn) as conn:
        record = export_decisions(conn, tmp_path / "d.csv", fmt="csv")
    raw = (tmp_path / "d.csv").read_text(encoding="utf-8")
    assert '"""move"""' not in raw  # a JSON string is not quoted twice
    with (tmp_path / "d.csv").open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == list(DECISION_COLUMNS)
        rows = list(reader)
    assert record.rows == len(rows) == len(expected)
    for row, want in zip(rows, expected, strict=True):
        action = want["action"]
        assert row["action"] == ("" if action is None else action if isinstance(action, str)
                                 else json.dumps(action, separators=(", ", ": ")))
        if action is not None and not isinstance(action, str):
            assert json.loads(row["action"]) == action
        assert json.loads(row["context"]) == want["context"]
        assert (row["prompt"], row["output"]) == (want["prompt"], want["output"])
        assert (row["agent_type"], row["event_type"] or None) == (
            want["agent_type"], want["event_type"])
        assert uuid.UUID(row["decision_id"]) == want["decision_id"]
        assert datetime.fromisoformat(row["created_at"]) == want["created_at"]
        assert row["rating"] == ("" if want["rating"] is None else str(want["rating"]))


async def test_async_export_writes_the_same_file(aconn: Conn, dsn: str, tmp_path: Path) -> None:
    await _decisions(aconn)
    with psycopg.connect(dsn) as conn:
        sync = export_decisions(conn, tmp_path / "sync.csv", fmt="csv", experiment=None,
                                min_rating=4.0)
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        done = await export_decisions_async(conn, tmp_path / "async.csv", fmt="csv",
                                            min_rating=4.0)
    assert (sync.rows, done.rows) == (2, 2)
    assert file_sha256(tmp_path / "sync.csv") == file_sha256(tmp_path / "async.csv")


async def test_unknown_format_is_refused_before_anything(dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(
        ConfigurationError, match="unknown format 'parquet' for decisions; valid formats: jsonl"
    ):
        export_decisions(conn, tmp_path / "d.parquet", fmt="parquet")
    assert list(tmp_path.iterdir()) == []


async def test_cli_export_decisions_as_csv(aconn: Conn, dsn: str, tmp_path: Path) -> None:
    expected = await _decisions(aconn)
    out = tmp_path / "train.csv"
    code = cli.main(["--dsn", dsn, "export-decisions", "--out", str(out), "--format", "csv",
                     "--simulation", "s2", "--rated-only"])
    assert code == 0
    with out.open(newline="", encoding="utf-8") as f:
        [row] = list(csv.DictReader(f))
    [want] = [r for r in expected if r["simulation_id"] == "s2" and r["rating"] is not None]
    assert (row["decision_id"], row["feedback"], row["reason"]) == (
        str(want["decision_id"]), "good", "clear")
