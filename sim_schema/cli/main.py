"""`sim-schema` command line: global options, dispatch, and one exit code per failure kind.

Each command module in `sim_schema/cli/` registers its subcommands; `common` holds what
they share. Errors become one line on stderr, never a traceback, never a password.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import psycopg

from .. import errors
from ..pgerrors import translate
from ..settings import Settings
from . import admin, analyst, demo, export, importers, migrate, server
from .common import EXIT_ERROR, EXIT_OK, exit_code_for

# Each exposes `register(subparsers)`; a handler receives the parsed arguments and
# returns the exit code. Command modules never import this one (no import cycle).
COMMAND_MODULES = [migrate, demo, server, export, importers, admin, analyst]

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sim-schema",
        description="PostgreSQL storage for agent-based simulations.",
        epilog=(
            "The database is --dsn, else $SIM_SCHEMA_DSN, else libpq's PG* variables. "
            "Exit codes: 0 ok, 1 error, 2 usage, 3 connection, 4 lock wait timeout, "
            "5 verification refused, 6 migration failed, 7 not found, 8 schema installed but "
            "not tracked (see `baseline`)."
        ),
    )
    parser.add_argument("--dsn", help="libpq connection string or URI")
    parser.add_argument("--schema", help="PostgreSQL schema of the module (default: sim)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The pool logs every failed attempt; the CLI reports failures once, as one line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except errors.SimSchemaError as exc:
        return _fail(str(exc), exit_code_for(exc))
    except psycopg.Error as exc:
        error = translate(exc, schema=args.schema or Settings.from_env().schema_name)
        if error is None:
            return _fail(f"database error: {exc}", EXIT_ERROR)
        return _fail(str(error), exit_code_for(error))
    except KeyboardInterrupt:
        print("sim-schema: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


def _fail(message: str, code: int) -> int:
    # One line: psycopg's DETAIL/HINT lines are folded into it.
    print("sim-schema: " + " ".join(message.split()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
