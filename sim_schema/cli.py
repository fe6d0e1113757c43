"""`sim-schema` command line: global options, dispatch, and one exit code per failure kind.

Each command module in `sim_schema/commands/` registers its subcommands; this module owns
only what they share. Errors become one line on stderr, never a traceback, never a password.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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

# Most specific first: the first matching class decides the exit code.
_EXIT_CODES: list[tuple[type[errors.SimSchemaError], int]] = [
    (errors.ConnectionFailed, EXIT_CONNECTION),
    (errors.LockTimeout, EXIT_LOCK_TIMEOUT),
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
            "5 verification refused, 6 migration failed, 7 not found."
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except errors.SimSchemaError as exc:
        # One line: psycopg's DETAIL/HINT lines are folded into it.
        print("sim-schema: " + " ".join(str(exc).split()), file=sys.stderr)
        return exit_code_for(exc)
    except KeyboardInterrupt:
        print("sim-schema: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
