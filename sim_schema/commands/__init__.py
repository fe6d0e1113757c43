"""Subcommand modules of `sim-schema`; each exposes `register(subparsers)`.

A handler receives the parsed arguments and returns the exit code.
"""

from __future__ import annotations

from types import ModuleType

from . import admin, analyst, demo, export, migrate, server

COMMAND_MODULES: list[ModuleType] = [migrate, demo, server, export, admin, analyst]
