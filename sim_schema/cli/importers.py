"""`sim-schema import agentfarm PATH...` and `sim-schema import onesim --from-dsn DSN`: bring a
predecessor's data into the database."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from ..importers.agentfarm import import_agentfarm
from ..importers.onesim import import_onesim
from ..importers.report import ImportReport
from ..importers.sink import DEFAULT_BATCH_SIZE
from ..store import Store
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="import a predecessor system's data (AgentFarm, OneSim)")
    kinds = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    farm = kinds.add_parser(
        "agentfarm", help="AgentFarm SQLite files: per-simulation or experiment-wide"
    )
    farm.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="SQLite file(s)")
    farm.add_argument(
        "--experiment", help="group every simulation imported into this experiment"
    )
    farm.add_argument(
        "--simulation-id",
        help="the simulation id of a single per-simulation file (default: the file's name)",
    )
    farm.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per COPY transaction"
    )
    farm.set_defaults(handler=run_agentfarm)
    onesim = kinds.add_parser(
        "onesim", help="a OneSim database (PostgreSQL): scenarios, trails and their data"
    )
    onesim.add_argument(
        "--from-dsn", "--from", dest="from_dsn", required=True, metavar="DSN",
        help="libpq connection string or URI of the OneSim database (only read)",
    )  # fmt: skip
    onesim.add_argument(
        "--source-schema", default="public", help="the schema of OneSim's tables (default: public)"
    )
    onesim.add_argument(
        "--trail", action="append", dest="trails", metavar="ID",
        help="import this trail only (repeatable; default: every trail)",
    )  # fmt: skip
    onesim.add_argument(
        "--experiment", help="group every trail imported into this experiment"
    )
    onesim.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="rows per COPY transaction"
    )
    onesim.set_defaults(handler=run_onesim)


def run_agentfarm(args: argparse.Namespace) -> int:
    async def run() -> ImportReport:
        async with Store(common.settings_from(args)) as store:
            return await import_agentfarm(
                store,
                args.paths,
                experiment_id=args.experiment,
                simulation_id=args.simulation_id,
                batch_size=args.batch_size,
            )

    return _print(asyncio.run(run()), args)


def run_onesim(args: argparse.Namespace) -> int:
    async def run() -> ImportReport:
        async with Store(common.settings_from(args)) as store:
            return await import_onesim(
                store,
                args.from_dsn,
                experiment_id=args.experiment,
                trail_ids=args.trails,
                source_schema=args.source_schema,
                batch_size=args.batch_size,
            )

    return _print(asyncio.run(run()), args)


def _print(report: ImportReport, args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(report.as_dict()))
    else:
        print("\n".join(report.lines()))
    return common.EXIT_OK
