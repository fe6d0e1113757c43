"""The `sim-schema` command line (entry point `sim_schema.cli:main`)."""

from .common import (
    EXIT_CONNECTION,
    EXIT_ERROR,
    EXIT_LOCK_TIMEOUT,
    EXIT_MIGRATION_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNTRACKED,
    EXIT_USAGE,
    EXIT_VERIFICATION,
)
from .main import main

__all__ = [
    "EXIT_CONNECTION",
    "EXIT_ERROR",
    "EXIT_LOCK_TIMEOUT",
    "EXIT_MIGRATION_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNTRACKED",
    "EXIT_USAGE",
    "EXIT_VERIFICATION",
    "main",
]
