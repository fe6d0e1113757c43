"""`sim-schema demo`: the whole module at work, on a local server when no DSN is given."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .. import embedded
from ..demo.run import (
    DatabaseContents,
    chart_available,
    database_contents,
    format_report,
    run_demo,
    write_chart,
)
from ..errors import ConfigurationError
from ..migrations.migration import load_migrations
from ..migrations.runner import MigrationRunner
from ..settings import Settings
from ..store import Store, connect, ensure_database
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a small simulation experiment end to end")
    p.add_argument(
        "--fresh", action="store_true", help="local server only: delete its data directory first"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        help=f"local server data directory (default ${embedded.DATA_DIR_ENV} or "
        "~/.sim_schema/pgdata; the other commands look there, so prefer the variable)",
    )
    p.add_argument("--experiment", metavar="ID",
                   help="the experiment's id (default demo_<UTC time>)")  # fmt: skip
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
    """The database to log into, and whether it is the demo database of the local server."""
    settings = common.option_settings(args)
    if common.names_a_database(settings):
        return settings, False
    server = embedded.start(args.data_dir, fresh=args.fresh)
    ensure_database(Settings(dsn=server), embedded.DEMO_DATABASE)
    print(
        f"local PostgreSQL running, data in {(args.data_dir or embedded.default_data_dir())}, "
        f"database {embedded.DEMO_DATABASE}",
        file=sys.stderr,
    )
    return settings.model_copy(update={"dsn": embedded.database_dsn(server)}), True


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
                store, simulations=args.simulations, agents=args.agents, steps=args.steps,
                experiment_id=args.experiment,
            )  # fmt: skip

    result = asyncio.run(main())
    with connect(settings) as conn:
        holds = database_contents(conn)
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
                    "database": {"local": local, **holds.as_dict()},
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
    _print_next_steps(settings, local, result.experiment_id, holds)
    return common.EXIT_OK


def _print_next_steps(
    settings: Settings, local: bool, experiment_id: str, holds: DatabaseContents
) -> None:
    dsn = settings.dsn or ""
    where = f"database {embedded.DEMO_DATABASE} of the local server" if local else "the database"
    print(f"{where} now holds {holds.describe()}")
    print("open the data in psql:")
    print("  " + common.psql_line(dsn, settings.schema_name,
                                  embedded.psql_path() if local else "psql"))  # fmt: skip
    print(f"  SELECT * FROM simulation_summary WHERE experiment_id = '{experiment_id}';")
    if local:
        print("or with sim-schema, which uses this database while the local server runs:")
        print(f"  sim-schema summary --experiment {experiment_id}")
        print("remove this run: sim-schema delete-experiment "
              f"--experiment {experiment_id} --cascade --yes")  # fmt: skip
        print("start fresh (deletes every demo run): sim-schema demo --fresh")
        print("the local server keeps running; stop it with: sim-schema server stop")
    else:
        print(f"remove this run: sim-schema delete-experiment --experiment {experiment_id} "
              "--cascade --yes")  # fmt: skip
