"""`sim-schema demo`: the whole module at work, on a local server when no DSN is given."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from psycopg import sql

from .. import embedded
from ..demo.run import chart_available, format_report, run_demo, write_chart
from ..errors import ConfigurationError
from ..migrations.migration import load_migrations
from ..migrations.runner import MigrationRunner
from ..settings import Settings, redact_dsn
from ..store import Store, connect, ensure_database
from . import common

DEMO_DATABASE = "sim_schema_demo"


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a small simulation experiment end to end")
    p.add_argument(
        "--fresh", action="store_true", help="local server only: delete its data directory first"
    )
    p.add_argument(
        "--data-dir", type=Path, help="local server data directory (default ~/.sim_schema/pgdata)"
    )
    p.add_argument("--simulations", type=int, default=3, help="simulations (default 3)")
    p.add_argument("--agents", type=int, default=250, help="initial agents each (default 250)")
    p.add_argument("--steps", type=int, default=300, help="steps each (default 300)")
    p.add_argument(
        "--chart",
        type=Path,
        default=Path("sim_schema_demo_population.png"),
        help="PNG chart path (default ./sim_schema_demo_population.png)",
    )
    p.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> tuple[Settings, bool]:
    settings = common.settings_from(args)
    if settings.dsn or any(k in os.environ for k in ("PGHOST", "PGDATABASE", "PGSERVICE")):
        return settings, False
    server = embedded.start(args.data_dir, fresh=args.fresh)
    ensure_database(Settings(dsn=server), DEMO_DATABASE)
    dsn = server.replace("/postgres?", f"/{DEMO_DATABASE}?", 1)
    print(
        f"local PostgreSQL running, data in {(args.data_dir or embedded.default_data_dir())}",
        file=sys.stderr,
    )
    return settings.model_copy(update={"dsn": dsn}), True


def run(args: argparse.Namespace) -> int:
    for name in ("simulations", "agents", "steps"):
        if getattr(args, name) < 1:
            raise ConfigurationError(f"--{name} must be >= 1")
    settings, local = _settings(args)
    with connect(settings) as conn:
        applied = MigrationRunner(load_migrations(None), schema=settings.schema_name).migrate(conn)
    print(f"migrations: {len(applied.applied)} applied", file=sys.stderr)

    async def main() -> Any:
        async with Store(settings) as store:
            return await run_demo(
                store, simulations=args.simulations, agents=args.agents, steps=args.steps
            )

    result = asyncio.run(main())
    chart: str | None = None
    if chart_available():
        chart = str(write_chart(result, args.chart))
    if args.json:
        print(
            json.dumps(
                {
                    "experiment_id": result.experiment_id,
                    "simulations": result.simulation_ids,
                    "rows_logged": result.rows_logged,
                    "seconds": round(result.seconds, 3),
                    "compare_seconds": round(result.compare_seconds, 4),
                    "chart": chart,
                }
            )
        )
        return common.EXIT_OK
    print(format_report(result))
    print()
    if chart:
        print(f"chart: {chart}")
    else:
        print("chart: skipped (matplotlib missing): pip install 'sim_schema[plot]'")
    where = settings.dsn if local else redact_dsn(settings.dsn or "") or "(PG* environment)"
    print("open the data in psql:")
    print(f'  {embedded.psql_path() if local else "psql"} "{where}"')
    print(f"  SET search_path TO {sql.Identifier(settings.schema_name).as_string()};")
    print(f"  SELECT * FROM simulation_summary WHERE experiment_id = '{result.experiment_id}';")
    if local:
        print("the local server keeps running; stop it with: sim-schema server stop")
    return common.EXIT_OK
