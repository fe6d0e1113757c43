"""`sim-schema server start | stop | status`: the local PostgreSQL of the `[embedded]` extra."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .. import embedded
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
    if args.action == "status" and not (data_dir / "postmaster.pid").exists():
        _say(args, {"data_dir": str(data_dir), "running": False}, f"not running ({data_dir})")
        return common.EXIT_NOT_FOUND
    dsn = embedded.start(data_dir, fresh=args.fresh)
    _say(
        args,
        {"data_dir": str(data_dir), "running": True, "dsn": dsn},
        f'running: {dsn}\n  data: {data_dir}\n  psql: {embedded.psql_path()} "{dsn}"',
    )
    return common.EXIT_OK


def _say(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data) if args.json else text)
