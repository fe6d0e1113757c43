"""`sim-schema export | export-decisions`: streaming exports for analysts and training data."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..catalog import INTERNAL_TABLES
from ..read.export import (
    DECISION_FORMATS,
    FORMATS,
    export,
    export_decisions,
    validate_format,
    validate_tables,
)
from ..store import connect
from . import common


def register(sub: Any) -> None:
    p = sub.add_parser(
        "export", help="export simulations to CSV, JSONL or Parquet (one file per table)"
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--simulation", action="append", metavar="ID",
                       help="a simulation id (repeatable)")  # fmt: skip
    which.add_argument("--experiment", metavar="ID", help="every simulation of this experiment")
    common.add_out_option(p, "output directory")
    p.add_argument("--format", choices=FORMATS, default="csv")
    p.add_argument(
        "--tables",
        help="comma-separated tables (default: every data table with rows for the selection;"
        " the ingest ledger, ingest_batches, only when named)",
    )
    p.add_argument(
        "--include-empty", action="store_true", help="also write files for tables with no rows"
    )
    p.add_argument("--from-step", type=int, help="first step (tables with a step column)")
    p.add_argument("--to-step", type=int, help="last step (tables with a step column)")
    common.add_overwrite(p)
    p.set_defaults(handler=run_export)

    p = sub.add_parser(
        "export-decisions",
        help="agent decisions as training data (JSONL, a JSON array or CSV), in step order",
    )
    common.add_out_option(p, "output file")
    p.add_argument(
        "--format", choices=DECISION_FORMATS, default="jsonl",
        help="jsonl (default), json (one array) or csv (JSON columns as JSON text)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--simulation", action="append", metavar="ID",
                       help="a simulation id (repeatable)")  # fmt: skip
    which.add_argument("--experiment", metavar="ID", help="every simulation of this experiment")
    p.add_argument("--agent", action="append", help="an agent id (repeatable)")
    p.add_argument("--min-rating", type=float, help="only decisions rated at least this")
    p.add_argument("--rated-only", action="store_true", help="only decisions with a rating")
    common.add_overwrite(p)
    p.set_defaults(handler=run_export_decisions)


def run_export(args: argparse.Namespace) -> int:
    # None: the export's own default (tables with rows, no ledger); a list: exactly those.
    tables = [t.strip() for t in args.tables.split(",")] if args.tables else None
    validate_tables(tables)
    validate_format(args.format)
    settings = common.settings_from(args)
    with connect(settings) as conn:
        manifest = export(
            conn,
            args.out,
            schema=settings.schema_name,
            simulations=args.simulation,
            experiment=args.experiment,
            tables=tables,
            fmt=args.format,
            from_step=args.from_step,
            to_step=args.to_step,
            include_empty=args.include_empty,
            overwrite=args.overwrite,
        )
    if args.json:
        print(json.dumps(manifest.as_dict()))
    else:
        for table, rec in manifest.tables.items():
            print(f"{table:22s} {rec.rows:>12,} rows {rec.bytes:>14,} bytes  {args.out / rec.file}")
        if manifest.empty:
            print(f"no rows, no file: {', '.join(manifest.empty)} (--include-empty writes them)")
        if tables is None:
            print(f"not exported: {', '.join(sorted(INTERNAL_TABLES))} (the ingest ledger;"
                  " --tables names it to include it)")  # fmt: skip
        print(f"manifest: {args.out / 'manifest.json'}")
    return common.EXIT_OK


def run_export_decisions(args: argparse.Namespace) -> int:
    settings = common.settings_from(args)
    with connect(settings) as conn:
        rec = export_decisions(
            conn,
            args.out,
            schema=settings.schema_name,
            simulations=args.simulation,
            experiment=args.experiment,
            agents=args.agent,
            min_rating=args.min_rating,
            rated_only=args.rated_only,
            overwrite=args.overwrite,
            fmt=args.format,
        )
    if args.json:
        print(
            json.dumps(
                {"rows": rec.rows, "bytes": rec.bytes, "file": str(args.out), "sha256": rec.sha256}
            )
        )
    else:
        print(f"{rec.rows:,} decisions, {rec.bytes:,} bytes: {args.out}")
    return common.EXIT_OK
