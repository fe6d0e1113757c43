"""Settings for the store and the CLI, read from arguments or the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .errors import ConfigurationError
from .names import DEFAULT_SCHEMA, validate_schema_name

ENV_PREFIX = "SIM_SCHEMA_"
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
               "keepalives_count": 3}


class Settings(BaseModel):
    """How to reach the database.

    `dsn` None means libpq's own defaults and `PG*` variables (PGHOST, PGUSER, ...).
    """

    model_config = ConfigDict(frozen=True)

    dsn: str | None = None
    schema_name: str = DEFAULT_SCHEMA
    pool_min_size: int = Field(default=1, ge=0)
    pool_max_size: int = Field(default=10, ge=1)
    pool_timeout: float = Field(default=30.0, gt=0, description="seconds to wait for a connection")
    connect_timeout: int = Field(default=10, ge=1)
    application_name: str = "sim_schema"

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, value: str) -> str:
        return validate_schema_name(value)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """`SIM_SCHEMA_DSN`, `SIM_SCHEMA_SCHEMA`, `SIM_SCHEMA_POOL_MIN_SIZE`, ... then overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = ENV_PREFIX + ("SCHEMA" if name == "schema_name" else name.upper())
            if key in env:
                values[name] = env[key]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValueError as exc:
            raise ConfigurationError(f"invalid sim_schema settings: {exc}") from None

    def conninfo(self) -> str:
        """The connection string with our defaults added (never logged: it may hold a password).

        TCP keepalives (unless the DSN sets them) let a connection whose server vanished
        without a word (a cable, a crashed host) fail within about a minute instead of
        waiting forever.
        """
        try:
            given = conninfo_to_dict(self.dsn or "")
            defaults = {k: v for k, v in _KEEPALIVES.items() if k not in given}
            return make_conninfo(
                self.dsn or "",
                connect_timeout=self.connect_timeout,
                application_name=self.application_name,
                **defaults,
            )
        except psycopg.ProgrammingError as exc:
            raise ConfigurationError(f"invalid DSN: {parse_error_reason(str(exc))}") from None

    def describe(self) -> str:
        """Where we connect, safe to print."""
        return redact_dsn(self.dsn or "") or "(libpq defaults / PG* environment)"

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, (redact_dsn(value) if name == "dsn" and value else value)


def redact_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    if not dsn:
        return ""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "<unparseable DSN>"
    params.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in params.items())


# libpq's DSN parse errors quote the part of the DSN they choke on, and that part can be
# the password (`invalid percent-encoded token: "S3cret%zz"`): only the words before the
# first quote are kept, with a fixed explanation for the messages we know.
_PARSE_ERRORS = (
    ("invalid percent-encoded token", "a % not followed by two hex digits (write % as %25)"),
    ("end of string reached when looking for matching", "an IPv6 host without its closing ]"),
    ("missing \"=\" after", "a key without \"=value\" (use key=value pairs or a URI)"),
    ("unterminated quoted string", "an unterminated quoted value"),
    ("invalid connection option", "an unknown connection option"),
    ("invalid URI query parameter", "an unknown URI query parameter"),
    ("unexpected spaces found", "spaces in the URI (percent-encode them as %20)"),
    ("invalid integer value", "a non-integer value for an integer option"),
)


def parse_error_reason(message: str) -> str:
    """libpq's reason for refusing a DSN, without any part of the DSN itself."""
    text = " ".join(message.split())
    for start, reason in _PARSE_ERRORS:
        if text.startswith(start):
            return f"{reason} (the DSN is not shown: it may hold a password)"
    words = text.split('"', 1)[0].rstrip(" :") or "unparseable"
    return f"{words} (the DSN is not shown: it may hold a password)"


def redact_message(message: str, dsn: str | None = None) -> str:
    """Remove a password that libpq may have echoed into an error message."""
    if dsn:
        try:
            password = conninfo_to_dict(dsn).get("password")
        except psycopg.ProgrammingError:
            password = None
        if password:
            message = message.replace(str(password), "***")
    return message
