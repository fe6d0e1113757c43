"""`sim-schema` command line: global options, dispatch, and one exit code per failure kind.

Each command module in `sim_schema/cli/` registers its subcommands; `common` holds what
they share. Errors become one line on stderr, never a traceback, never a password; with
`--json`, also a JSON object on stdout (`{"error": ..., "exit_code": ...}`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import psycopg

from .. import __version__, errors
from ..pgerrors import translate
from ..settings import Settings
from . import admin, analyst, demo, export, importers, migrate, server
from .common import EXIT_ERROR, EXIT_OK, EXIT_USAGE, exit_code_for, report_failure

# Each exposes `register(subparsers)`; a handler receives the parsed arguments and
# returns the exit code. Command modules never import this one (no import cycle).
COMMAND_MODULES = [migrate, demo, server, export, importers, admin, analyst]


class UsageError(Exception):
    """A command line argparse refused; raised instead of argparse's exit."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    """The options every command takes, before or after its name.

    The main parser holds the defaults; each command's copy has none (SUPPRESS), so a
    value given after the command wins and an absent one leaves the one given before."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument("--dsn", default=default(None), help="libpq connection string or URI")
    group.add_argument(
        "--schema", default=default(None), help="PostgreSQL schema of the module (default: sim)"
    )
    group.add_argument(
        "--json", action="store_true", default=default(False),
        help="machine-readable output (errors too: {\"error\", \"exit_code\"})",
    )  # fmt: skip
    group.add_argument(
        "--csv", action="store_true", default=default(False),
        help="CSV on stdout (commands that print a table)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sim-schema",
        description="PostgreSQL storage for agent-based simulations.",
        epilog=(
            "The database is --dsn, else $SIM_SCHEMA_DSN, else libpq's PG* variables; with "
            "none of them, the demo's database on the local server while it runs. "
            "Exit codes: 0 ok, 1 error, 2 usage, 3 connection, 4 lock wait timeout, "
            "5 verification refused, 6 migration failed, 7 not found, 8 schema installed but "
            "not tracked (see `baseline`)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sim-schema {__version__}")
    _add_global_options(parser, defaults=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    for command in sub.choices.values():
        _add_global_options(command, defaults=False)
    return parser


def _check_output_options(args: argparse.Namespace) -> None:
    if args.json and args.csv:
        raise errors.ConfigurationError("--json and --csv: choose one")
    if args.csv and not getattr(args, "prints_table", False):
        raise errors.ConfigurationError(
            f"--csv: `{args.command}` prints no table (use --json)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    # The pool logs every failed attempt; the CLI reports failures once, as one line.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(words)
    except UsageError as exc:
        if "--json" in words:
            command = exc.parser.prog.removeprefix(parser.prog).strip()
            message = f"{command}: {exc}" if command else str(exc)
            return report_failure(message, EXIT_USAGE, as_json=True)
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        _check_output_options(args)
        code: int = args.handler(args)
        return code
    except errors.SimSchemaError as exc:
        return report_failure(str(exc), exit_code_for(exc), as_json=args.json)
    except psycopg.Error as exc:
        error = translate(exc, schema=args.schema or Settings.from_env().schema_name)
        if error is None:
            return report_failure(f"database error: {exc}", EXIT_ERROR, as_json=args.json)
        return report_failure(str(error), exit_code_for(error), as_json=args.json)
    except KeyboardInterrupt:
        print("sim-schema: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `sim-schema ... | head`: the reader has all it wanted
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
