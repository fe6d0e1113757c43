"""A malformed DSN never echoes its password: not from Settings, the Store, or the CLI
(by --dsn or by SIM_SCHEMA_DSN), whatever libpq quotes back from the string it refused.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sim_schema.errors import ConfigurationError
from sim_schema.settings import Settings, parse_error_reason
from sim_schema.store import Store

SECRET = "S3cretPW"

# Each one is refused by libpq's parser, most of them with a quote of the offending part.
MALFORMED = [
    f"postgresql://u:{SECRET}!%zz@localhost/db",  # bad percent-encoding inside the password
    f"postgresql://u:{SECRET}@[::1/db",  # unclosed IPv6 bracket: libpq quotes the whole URI
    f'postgresql://u:{SECRET}"q%zz@h/db',  # a quote inside the echoed token
    f"postgresql://u:{SECRET}@local host/db",
    f"postgresql://u:{SECRET}@localhost/db?{SECRET}=1",
    f"host=localhost password={SECRET} dbname",
    f"host=localhost password='{SECRET}",
    f"password={SECRET} {SECRET}=1",
]


@pytest.mark.parametrize("dsn", MALFORMED)
def test_settings_refuse_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(dsn=dsn).conninfo()
    message = str(info.value)
    assert message.startswith("invalid DSN: ")
    assert SECRET not in message
    assert "not shown" in message


@pytest.mark.parametrize("dsn", MALFORMED[:3])
async def test_store_open_refuses_without_the_password(dsn: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        await Store(Settings(dsn=dsn)).open()
    assert SECRET not in str(info.value)


def test_known_reasons_are_explained() -> None:
    reason = parse_error_reason(f'invalid percent-encoded token: "{SECRET}%zz"\n')
    assert reason.startswith("a % not followed by two hex digits")
    assert SECRET not in reason
    # an unknown message keeps only its words before the first quote
    assert parse_error_reason(f'something new: "{SECRET}"') == (
        "something new (the DSN is not shown: it may hold a password)"
    )


def test_settings_repr_hides_the_password() -> None:
    settings = Settings(dsn=f"postgresql://u:{SECRET}@localhost/db")
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert "localhost" in repr(settings)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "sim_schema", *args],
        capture_output=True, text=True, env=environ, timeout=60,
    )  # fmt: skip


@pytest.mark.parametrize("dsn", MALFORMED)
@pytest.mark.parametrize("how", ["--dsn", "SIM_SCHEMA_DSN"])
def test_cli_never_prints_the_password(dsn: str, how: str) -> None:
    if how == "--dsn":
        proc = _cli(["--dsn", dsn, "status"], {})
    else:
        proc = _cli(["status"], {"SIM_SCHEMA_DSN": dsn})
    assert proc.returncode == 2, proc.stderr
    assert SECRET not in proc.stderr and SECRET not in proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("sim-schema: invalid DSN: "), proc.stderr
