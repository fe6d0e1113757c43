"""`sim-schema server start | stop | status`: the local PostgreSQL of the `[embedded]` extra."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import embedded
from ..settings import Settings
from ..store import database_exists
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser("server", help="the local PostgreSQL used when no DSN is given")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument(
        "--data-dir", type=Path, help=f"default: ${embedded.DATA_DIR_ENV} or ~/.sim_schema/pgdata"
    )
    p.add_argument("--fresh", action="store_true", help="with start: delete the data first")
    p.set_defaults(handler=run_server)


def run_server(args: argparse.Namespace) -> int:
    data_dir = (args.data_dir or embedded.default_data_dir()).expanduser().resolve()
    if args.action == "stop":
        stopped = embedded.stop(data_dir)
        _say(
            args,
            {"data_dir": str(data_dir), "stopped": stopped},
            f"stopped the server in {data_dir}" if stopped else f"no server running in {data_dir}",
        )
        return common.EXIT_OK
    if args.action == "status" and embedded.running_dsn(data_dir) is None:
        _say(args, {"data_dir": str(data_dir), "running": False}, f"not running ({data_dir})")
        return common.EXIT_NOT_FOUND
    dsn = embedded.start(data_dir, fresh=args.fresh)
    demo = embedded.database_dsn(dsn)
    has_demo = database_exists(Settings(dsn=dsn), embedded.DEMO_DATABASE)
    schema = common.option_settings(args).schema_name
    used = data_dir == embedded.default_data_dir().expanduser().resolve()
    lines = [f"running: {dsn}", f"  data: {data_dir}"]
    if has_demo:
        note = " (sim-schema commands with no DSN use it)" if used else ""
        lines.append(f"  demo database: {embedded.DEMO_DATABASE}{note}")
    else:
        lines.append(f"  demo database: none yet (`sim-schema demo` makes "
                     f"{embedded.DEMO_DATABASE})")  # fmt: skip
    lines.append("  psql: " + common.psql_line(demo if has_demo else dsn, schema,
                                                embedded.psql_path()))  # fmt: skip
    _say(
        args,
        {"data_dir": str(data_dir), "running": True, "dsn": dsn,
         "demo_dsn": demo if has_demo else None},
        "\n".join(lines),
    )  # fmt: skip
    return common.EXIT_OK


def _say(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)
