"""What every `sim-schema` command shares: exit codes and the settings from the options."""

from __future__ import annotations

import argparse

from .. import errors
from ..settings import Settings

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


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings.from_env(dsn=args.dsn, schema_name=args.schema)
