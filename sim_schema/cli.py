"""`sim-schema` command line: global options, dispatch, and one exit code per failure kind.

Each command module in `sim_schema/commands/` registers its subcommands; this module owns
only what they share. Errors become one line on stderr, never a traceback, never a password.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import psycopg

from . import errors
from .commands import COMMAND_MODULES
from .settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_LOCK_TIMEOUT = 4
EXIT_VERIFICATION = 5
EXIT_MIGRATION_FAILED = 6
EXIT_NOT_FOUND = 7
EXIT_UNTRACKED = 8

# Most specific first: the first matching class decides the exit code.
_EXIT_CODES: list[tuple[type[errors.SimSchemaError], int]] = [
    (errors.ConnectionFailed, EXIT_CONNECTION),
    (errors.LockTimeout, EXIT_LOCK_TIMEOUT),
    (errors.UntrackedSchema, EXIT_UNTRACKED),
    (errors.VerificationError, EXIT_VERIFICATION),
    (errors.InvalidIndexError, EXIT_VERIFICATION),
    (errors.MigrationDefinitionError, EXIT_VERIFICATION),
    (errors.MigrationFailed, EXIT_MIGRATION_FAILED),
    (errors.ArchiveRefused, EXIT_VERIFICATION),
    (errors.ConfigurationError, EXIT_USAGE),
    (errors.NotFound, EXIT_NOT_FOUND),
]


def exit_code_for(exc: errors.SimSchemaError) -> int:
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_ERROR


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


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(dsn=args.dsn, schema_name=args.schema)


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
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
        schema = args.schema or Settings.from_env().schema_name
        return _fail(
            f"schema {schema!r} is missing or not fully migrated in this database "
            f"({exc.diag.message_primary}): run `sim-schema migrate`",
            EXIT_NOT_FOUND,
        )
    except psycopg.Error as exc:
        return _fail(f"database error: {exc}", EXIT_ERROR)
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
