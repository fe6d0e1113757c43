"""`sim-schema delete-simulation | delete-experiment | archive | grant-read-only`.

Deleting needs `--yes`; without it the command prints what would be deleted and exits 2.
Simulations and experiments are named with `--simulation` / `--experiment`, as in every
other command (the bare id of earlier releases still works, with a deprecation note).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .. import admin
from ..read.export import FORMATS
from ..store import connect
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser("delete-simulation", help="delete a simulation and all its rows")
    common.add_id_option(p, "simulation")
    p.add_argument("--yes", action="store_true", help="really delete (else: show what would go)")
    p.set_defaults(handler=run_delete_simulation)

    p = sub.add_parser(
        "delete-experiment", help="delete an experiment (with --cascade: and its simulations)"
    )
    common.add_id_option(p, "experiment")
    p.add_argument(
        "--cascade", action="store_true", help="also delete the simulations it still holds"
    )
    p.add_argument("--yes", action="store_true", help="really delete (else: show what would go)")
    p.set_defaults(handler=run_delete_experiment)

    p = sub.add_parser(
        "archive", help="export a simulation, verify the files, then delete it from the database"
    )
    p.add_argument("--simulation", required=True, metavar="ID")
    common.add_out_option(p, "output directory")
    p.add_argument("--format", choices=FORMATS, default="csv")
    p.add_argument("--yes", action="store_true", help="really delete after a verified export")
    common.add_overwrite(p)
    p.set_defaults(handler=run_archive)

    p = sub.add_parser(
        "grant-read-only", help="grant a role SELECT on all tables and views, now and later"
    )
    p.add_argument("role")
    p.add_argument(
        "--allow-temp",
        action="store_true",
        help="grant even though the role can create temporary tables (PUBLIC's TEMPORARY)",
    )
    p.set_defaults(handler=run_grant_read_only)


def run_delete_simulation(args: argparse.Namespace) -> int:
    simulation = common.given_id(args, "simulation")
    settings = common.settings_from(args)
    schema = settings.schema_name
    with connect(settings) as conn:
        if not args.yes:
            admin.require_simulation(conn, simulation, schema=schema)
            counts = admin.row_counts(conn, [simulation], schema=schema)
            return _refuse(args, f"simulation {simulation!r}", counts)
        counts = admin.delete_simulation(conn, simulation, schema=schema)
    _report(args, f"deleted simulation {simulation!r}", counts)
    return common.EXIT_OK


def run_delete_experiment(args: argparse.Namespace) -> int:
    experiment = common.given_id(args, "experiment")
    settings = common.settings_from(args)
    schema = settings.schema_name
    with connect(settings) as conn:
        if not args.yes:
            ids = admin.simulations_of(conn, experiment, schema=schema)
            counts = {"experiments": 1, **admin.row_counts(conn, ids, schema=schema)}
            return _refuse(args, f"experiment {experiment!r}", counts)
        counts = admin.delete_experiment(conn, experiment, cascade=args.cascade, schema=schema)
    _report(args, f"deleted experiment {experiment!r}", counts)
    return common.EXIT_OK


def run_archive(args: argparse.Namespace) -> int:
    settings = common.settings_from(args)
    schema = settings.schema_name
    with connect(settings) as conn:
        admin.require_simulation(conn, args.simulation, schema=schema)
        if not args.yes:
            counts = admin.row_counts(conn, [args.simulation], schema=schema)
            return _refuse(
                args, f"simulation {args.simulation!r} (after export to {args.out})", counts
            )
        result = admin.archive_simulation(
            conn, args.simulation, args.out, fmt=args.format, schema=schema,
            overwrite=args.overwrite,
        )
    _report(
        args,
        f"archived simulation {args.simulation!r} to {result.out_dir}, then deleted",
        result.deleted,
    )
    return common.EXIT_OK


def run_grant_read_only(args: argparse.Namespace) -> int:
    settings = common.settings_from(args)
    with connect(settings) as conn:
        admin.grant_read_only(conn, args.role, settings.schema_name, allow_temp=args.allow_temp)
    if args.json:
        print(json.dumps({"role": args.role, "schema": settings.schema_name, "granted": True}))
    else:
        print(
            f"role {args.role!r}: SELECT on every table and view of schema "
            f"{settings.schema_name!r}, including ones created later"
        )
    return common.EXIT_OK


def _refuse(args: argparse.Namespace, what: str, counts: dict[str, int]) -> int:
    _report(args, f"would delete {what}", counts, deleted=False)
    print("sim-schema: nothing deleted: pass --yes to delete", file=sys.stderr)
    return common.EXIT_USAGE


def _report(
    args: argparse.Namespace, title: str, counts: dict[str, int], *, deleted: bool = True
) -> None:
    if args.json:
        print(json.dumps({"deleted": deleted, "rows": counts}))
        return
    print(f"{title}:")
    for table, n in counts.items():
        if n:
            print(f"  {table:22s} {n:>12,} rows")
