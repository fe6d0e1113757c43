"""What every `sim-schema` command shares: exit codes, failure reports, the settings from
the options (and the demo's database when nothing names one), the psql line."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .. import embedded, errors
from ..settings import Settings
from ..store import database_exists

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_LOCK_TIMEOUT = 4
EXIT_VERIFICATION = 5
EXIT_MIGRATION_FAILED = 6
EXIT_NOT_FOUND = 7
EXIT_UNTRACKED = 8
EXIT_OUTPUT = 9

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
    (errors.OutputError, EXIT_OUTPUT),
    (errors.NotFound, EXIT_NOT_FOUND),
]

# libpq variables that name a server or a database: with one of them set, no DSN means
# libpq's choice, never the local demo server.
LIBPQ_TARGET_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE")


def exit_code_for(exc: errors.SimSchemaError) -> int:
    for cls, code in _EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_ERROR


def add_overwrite(parser: argparse.ArgumentParser) -> None:
    """The option of every command that writes files."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing output (default: refuse)"
    )


def report_failure(message: str, code: int, *, as_json: bool = False) -> int:
    """One line on stderr (psycopg's DETAIL/HINT lines folded into it); with `as_json`,
    also `{"error": ..., "exit_code": ...}` on stdout. Returns `code`."""
    line = " ".join(message.split())
    if as_json:
        print(json.dumps({"error": line, "exit_code": code}))
    print("sim-schema: " + line, file=sys.stderr)
    return code


def names_a_database(settings: Settings) -> bool:
    """A DSN or a libpq variable says which database to use."""
    return bool(settings.dsn) or any(name in os.environ for name in LIBPQ_TARGET_VARIABLES)


def option_settings(args: argparse.Namespace) -> Settings:
    """The settings of the options and the environment, as they are."""
    return Settings.from_env(dsn=args.dsn, schema_name=args.schema)


def settings_from(args: argparse.Namespace) -> Settings:
    """The options' settings; when nothing names a database, the demo's on the local server."""
    settings = option_settings(args)
    if names_a_database(settings):
        return settings
    return _demo_database(settings)


def _demo_database(settings: Settings) -> Settings:
    """The demo database of the local server while it runs (said on stderr); a refusal
    naming the command to run when the server is stopped or has no demo database; libpq's
    defaults on a machine that never ran the local server."""
    data_dir = embedded.default_data_dir().expanduser().resolve()
    server = embedded.running_dsn(data_dir)
    where = f"the local server ({data_dir})"
    if server is None:
        if not embedded.initialized(data_dir):
            print(
                "sim-schema: no DSN given (--dsn, SIM_SCHEMA_DSN or PG* variables): using "
                "libpq's defaults; `sim-schema demo` sets up a local database to try",
                file=sys.stderr,
            )
            return settings
        raise errors.ConnectionFailed(
            f"no DSN given, and {where} is stopped: start it with `sim-schema server start` "
            f"(the demo's data is in its database {embedded.DEMO_DATABASE}), or pass --dsn / "
            "set SIM_SCHEMA_DSN"
        )
    if not database_exists(Settings(dsn=server), embedded.DEMO_DATABASE):
        raise errors.ConnectionFailed(
            f"no DSN given, and {where} has no database {embedded.DEMO_DATABASE} yet: "
            "run `sim-schema demo`, or pass --dsn / set SIM_SCHEMA_DSN"
        )
    print(
        f"sim-schema: no DSN given: using database {embedded.DEMO_DATABASE} of {where}",
        file=sys.stderr,
    )
    return settings.model_copy(update={"dsn": embedded.database_dsn(server)})


def add_out_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--out PATH`, also spelled `--output` (the predecessor's name)."""
    parser.add_argument("--out", "--output", dest="out", type=Path, required=True,
                        metavar="PATH", help=what)  # fmt: skip


def add_id_option(parser: argparse.ArgumentParser, name: str) -> None:
    """`--simulation ID` / `--experiment ID`, with the bare `ID` of earlier releases kept
    as a deprecated alias (`given_id` resolves the two)."""
    parser.add_argument(f"--{name}", metavar="ID", help=f"the {name}'s id")
    parser.add_argument(f"{name}_deprecated", nargs="?", metavar="ID", help=argparse.SUPPRESS)


def given_id(args: argparse.Namespace, name: str) -> str:
    """The id given as `--NAME ID` or, deprecated, as a bare `ID` (said on stderr)."""
    option, bare = getattr(args, name), getattr(args, f"{name}_deprecated")
    if option is not None and bare is not None and option != bare:
        raise errors.ConfigurationError(f"two {name}s given: {bare!r} and --{name} {option!r}")
    if option is None and bare is None:
        raise errors.ConfigurationError(f"`{args.command}` needs --{name} ID")
    if option is None:
        print(f"sim-schema: `{args.command} ID` is deprecated: write "
              f"`{args.command} --{name} ID`", file=sys.stderr)  # fmt: skip
    return str(option if option is not None else bare)


def psql_line(dsn: str, schema: str, psql: str = "psql") -> str:
    """A psql command for `dsn` (without its password) with `schema` on the search path,
    so that the views' names work as they are."""
    params = {k: v for k, v in conninfo_to_dict(dsn).items() if k != "password"}
    params["options"] = f"{params.get('options', '')} -c search_path={schema}".strip()
    return f'{psql} "{make_conninfo("", **params)}"'
