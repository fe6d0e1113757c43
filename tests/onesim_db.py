"""OneSim databases for the tests: a scratch database on the test server with the schema of
tests/predecessors/onesim_schema.py and rows in it.

The rows are made so that every column holds values no other column holds, so a test that
reads them back column by column sees any column mapped to the wrong place.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from predecessors.onesim_schema import create_schema
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

T0 = datetime(2024, 5, 1, 9, 0, 0)  # OneSim's times have no zone


@dataclass
class OneSimData:
    """The rows written into a OneSim database, per table, as dicts of OneSim columns."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        self.tables.setdefault(table, []).append(row)
        return row

    def rows(self, table: str, trail_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
        return [
            r for r in self.tables.get(table, [])
            if trail_id is None or r.get("trail_id") == trail_id
        ]  # fmt: skip


def trail_rows(data: OneSimData, scenario_id: str, n: int, *, steps: int = 3,
               agents: int = 3, status: str = "COMPLETED") -> uuid.UUID:  # fmt: skip
    """A trail of `scenario_id` with its agents, states, events and decisions."""
    trail = uuid.UUID(int=0x7A11_0000 + n)
    start = T0 + timedelta(days=n)
    data.add("trails", {
        "trail_id": trail, "scenario_id": scenario_id, "name": f"Harbour run {n}",
        "description": f"run {n}: quay rules", "config": {"num_agents": agents, "seed": n},
        "status": status, "step_count": steps if status == "COMPLETED" else 0,
        "start_time": None if status == "CREATED" else start + timedelta(minutes=1),
        "end_time": start + timedelta(hours=2) if status == "COMPLETED" else None,
        "created_at": start,
    })  # fmt: skip
    ids = [f"skipper-{n}-{i}" for i in range(agents)]
    for i, agent in enumerate(ids):
        data.add("agents", {
            "trail_id": trail, "agent_id": agent, "agent_type": ("captain", "pilot", "clerk")[i % 3],
            "name": f"Sailor {n}.{i}",
            "initial_profile": None if i == 2 else {"age": 30 + i, "port": "north"},
            "created_at": start + timedelta(seconds=i),
        })  # fmt: skip
    for s in range(steps):
        at = start + timedelta(minutes=10 * (s + 1))
        data.add("environment_states", {
            "trail_id": trail, "step": s, "created_at": at,
            "state": {"ships": 10 * n + s, "tide": {"level": 1.5 + s}},
        })  # fmt: skip
        for i, agent in enumerate(ids):
            data.add("agent_states", {
                "trail_id": trail, "agent_id": agent, "step": s,
                "profile": {"mood": ("calm", "busy")[(s + i) % 2], "cargo": s * 10 + i},
                "memory": None if i == 1 else {"seen": [f"ship-{s}", f"dock-{i}"]},
                "relationships": {ids[(i + 1) % agents]: {"trust": 0.25 * (i + 1)}},
                "created_at": at + timedelta(seconds=i),
            })  # fmt: skip
        for k in range(2):
            source, target = ids[k % agents], ids[(k + 1) % agents]
            event = data.add("events", {
                "event_id": uuid.UUID(int=(n << 32) + (s << 8) + k + 1), "trail_id": trail,
                "step": s, "event_type": ("hail", "trade")[k], "source_type": "agent",
                "source_id": source, "target_type": "agent", "target_id": target,
                "payload": {"words": f"ahoy {s}", "k": k},
                "processed": k == 0,
                "processing_result": {"answered": True, "at_step": s} if k == 0 else None,
                "created_at": at + timedelta(seconds=30 + k),
            })  # fmt: skip
            if k == 0:
                data.add("agent_decisions", {
                    "decision_id": uuid.UUID(int=(n << 32) + (s << 8) + 0xD0),
                    "trail_id": trail, "agent_id": target, "step": s,
                    "event_id": event["event_id"],
                    "context": {"heard": f"ahoy {s}"}, "prompt": f"{source} hails you",
                    "output": f"ahoy back {s}",
                    "action": "reply" if s % 2 == 0 else json.dumps({"type": "wave", "s": s}),
                    "processing_time": 0.5 + s, "feedback": "polite" if s == 0 else None,
                    "rating": 4.5 - s if s == 0 else None,
                    "reason": "answered quickly" if s == 0 else None,
                    "created_at": at + timedelta(seconds=40),
                })  # fmt: skip
    return trail


def sample(*, trails: int = 2) -> OneSimData:
    """Two scenarios; `trails` trails of the first (completed, then running), one created
    trail of the second with no data."""
    data = OneSimData()
    data.add("scenarios", {
        "scenario_id": "harbour", "name": "Harbour Traffic", "folder_path": "./scenarios/harbour",
        "description": "ships and quays", "tags": {"domain": "ports", "version": "2.1"},
        "created_at": T0 - timedelta(days=1),
    })  # fmt: skip
    data.add("scenarios", {
        "scenario_id": "market", "name": "Fish Market", "folder_path": "./scenarios/market",
        "description": None, "tags": None, "created_at": T0 - timedelta(hours=5),
    })  # fmt: skip
    for n in range(trails):
        trail_rows(data, "harbour", n, status="COMPLETED" if n == 0 else "RUNNING")
    data.add("trails", {
        "trail_id": uuid.UUID(int=0x7A11_00FF), "scenario_id": "market", "name": "Market dry run",
        "description": None, "config": None, "status": "CREATED", "step_count": 0,
        "start_time": None, "end_time": None, "created_at": T0 + timedelta(days=9),
    })  # fmt: skip
    return data


def write(dsn: str, data: OneSimData, *, schema: str = "public") -> None:
    """Insert `data`, table by table (parents first)."""
    with psycopg.connect(dsn, autocommit=True, options=f"-c search_path={schema}") as conn:
        for table in ("scenarios", "trails", "environment_states", "agents", "agent_states",
                      "events", "agent_decisions"):  # fmt: skip
            for row in data.tables.get(table, []):
                names = list(row)
                values = [Jsonb(v) if isinstance(v, dict) else v for v in row.values()]
                conn.execute(
                    sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                        sql.Identifier(table),
                        sql.SQL(", ").join(map(sql.Identifier, names)),
                        sql.SQL(", ").join(sql.Placeholder() * len(names)),
                    ),
                    values,
                )


@contextmanager
def onesim_database(server_dsn: str, *, drop: dict[str, set[str]] | None = None,
                    schema: str = "public") -> Iterator[str]:  # fmt: skip
    """A scratch database on the test server with the OneSim schema (no rows); its DSN.
    Dropped afterwards."""
    name = f"onesim_src_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            if schema != "public":
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            create_schema(conn, drop=drop, schema=schema)
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
