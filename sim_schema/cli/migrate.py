"""`sim-schema migrate | status | plan`: what a deploy job runs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ..migrations.migration import load_migrations
from ..migrations.runner import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_LOCK_WAIT,
    DEFAULT_STATEMENT_TIMEOUT,
    MigrationRunner,
)
from ..settings import Settings
from ..store import connect
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser("migrate", help="apply pending migrations (safe from many replicas)")
    p.add_argument("--to", type=int, help="stop at this version")
    p.add_argument(
        "--lock-wait",
        type=float,
        default=DEFAULT_LOCK_WAIT,
        help="seconds to wait for another migrator's lock (default %(default)g)",
    )
    p.add_argument(
        "--lock-timeout",
        default=DEFAULT_LOCK_TIMEOUT,
        help="PostgreSQL lock_timeout per migration (default %(default)s)",
    )
    p.add_argument(
        "--statement-timeout",
        default=DEFAULT_STATEMENT_TIMEOUT,
        help="PostgreSQL statement_timeout per migration (default %(default)s)",
    )
    p.add_argument(
        "--drop-invalid-indexes",
        action="store_true",
        help="drop INVALID indexes left by a failed concurrent build, then rebuild",
    )
    p.set_defaults(handler=run_migrate)

    p = sub.add_parser("status", help="applied, pending and drifted migrations")
    p.set_defaults(handler=run_status)

    p = sub.add_parser("plan", help="print the SQL migrate would run; change nothing")
    p.add_argument("--to", type=int, help="stop at this version")
    p.set_defaults(handler=run_plan)

    p = sub.add_parser(
        "baseline",
        help="adopt a schema installed without tracking rows, after checking it matches",
    )
    p.add_argument(
        "--to", type=int, required=True, help="the version the installed schema is at"
    )
    p.set_defaults(handler=run_baseline)


def _runner(args: argparse.Namespace) -> tuple[Settings, MigrationRunner]:
    settings = common.settings_from(args)
    runner = MigrationRunner(
        load_migrations(None),
        schema=settings.schema_name,
        lock_wait=getattr(args, "lock_wait", DEFAULT_LOCK_WAIT),
        lock_timeout=getattr(args, "lock_timeout", DEFAULT_LOCK_TIMEOUT),
        statement_timeout=getattr(args, "statement_timeout", DEFAULT_STATEMENT_TIMEOUT),
    )
    return settings, runner


def run_migrate(args: argparse.Namespace) -> int:
    settings, runner = _runner(args)
    with connect(settings) as conn:
        result = runner.migrate(conn, args.to, drop_invalid_indexes=args.drop_invalid_indexes)
    if args.json:
        print(
            json.dumps(
                {
                    "schema": runner.schema,
                    "applied": [
                        {
                            "version": r.version,
                            "description": r.description,
                            "duration_ms": round(r.duration_ms, 3),
                        }
                        for r in result.applied
                    ],
                    "lock_wait_s": round(result.lock_wait_s, 3),
                    "dropped_invalid_indexes": result.dropped_invalid_indexes,
                }
            )
        )
    elif not result.applied:
        print(f"schema {runner.schema}: up to date")
    else:
        for r in result.applied:
            print(f"applied {r.version:4d}  {r.description}  ({r.duration_ms:.0f} ms)")
    return common.EXIT_OK


def run_status(args: argparse.Namespace) -> int:
    """Exit 5 when the database disagrees with the code (drifted or unknown versions)."""
    settings, runner = _runner(args)
    with connect(settings) as conn:
        states = runner.status(conn)
    if args.json:
        print(json.dumps({"schema": runner.schema, "migrations": [s.as_dict() for s in states]}))
    else:
        for s in states:
            when = s.applied_at.isoformat(timespec="seconds") if s.applied_at else ""
            print(f"{s.version:4d}  {s.state:8s}  {when:25s}  {s.description}")
    if any(s.state == "untracked" for s in states):
        print(
            f"sim-schema: schema {runner.schema!r} holds objects but records no migration: "
            "adopt it with `sim-schema baseline --to VERSION`",
            file=sys.stderr,
        )
        return common.EXIT_UNTRACKED
    bad = any(s.state in ("drifted", "unknown") for s in states)
    return common.EXIT_VERIFICATION if bad else common.EXIT_OK


def run_plan(args: argparse.Namespace) -> int:
    settings, runner = _runner(args)
    with connect(settings) as conn:
        pending = runner.plan(conn, args.to)
    if args.json:
        print(
            json.dumps(
                {
                    "schema": runner.schema,
                    "pending": [
                        {
                            "version": m.version(),
                            "description": m.description(),
                            "transactional": m.transactional,
                            "statements": m.statements,
                        }
                        for m in pending
                    ],
                }
            )
        )
    elif not pending:
        print(f"-- schema {runner.schema}: nothing to apply")
    else:
        print(f"-- schema {runner.schema}: statements run with search_path = {runner.schema}")
        for m in pending:
            kind = "" if m.transactional else " (non-transactional)"
            print(f"-- migration {m.version()}: {m.description()}{kind}")
            for stmt in m.statements:
                print(stmt.rstrip() + ";\n")
    return common.EXIT_OK


def run_baseline(args: argparse.Namespace) -> int:
    """Record versions 0..--to as applied, only if the live catalog is exactly theirs."""
    settings, runner = _runner(args)
    with connect(settings) as conn:
        records = runner.baseline(conn, args.to)
    if args.json:
        print(json.dumps({"schema": runner.schema, "baselined": [r.version for r in records]}))
    else:
        print(
            f"schema {runner.schema}: the catalog matches versions 0..{args.to}; "
            f"recorded them as applied ({records[-1].applied_by})"
        )
    return common.EXIT_OK
