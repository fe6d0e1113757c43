"""The built wheel alone, in a fresh virtual environment, migrates a database.

This is what a deploy image does: no source tree, only `pip install sim_schema-*.whl`.
The migrations must come from inside the wheel (`sim_schema/_migrations`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import psycopg
import pytest

from sim_schema.migrations.migration import load_migrations

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    clean.pop("PYTHONPATH", None)
    done = subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, env={**clean, **env}, timeout=300
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.slow
def test_wheel_alone_migrates_a_database(tmp_path: Path, blank_dsn: str) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)], tmp_path)
    (wheel,) = dist.glob("sim_schema-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", str(wheel)], tmp_path)

    # The installed package, not this checkout, and its migrations from inside the wheel.
    where = _run(
        [
            str(python),
            "-c",
            "import sim_schema, sim_schema.migrations.migration as m;"
            " print(sim_schema.__file__); print(m.migrations_dir())",
        ],
        tmp_path,
    ).stdout.splitlines()
    assert all(line.startswith(str(env_dir)) for line in where), where
    assert where[1].endswith("_migrations")

    done = _run(
        [str(env_dir / "bin" / "sim-schema"), "--json", "migrate"],
        tmp_path,
        SIM_SCHEMA_DSN=blank_dsn,
    )
    shipped = load_migrations(None)
    applied = json.loads(done.stdout)["applied"]
    assert [a["version"] for a in applied] == [m.version() for m in shipped]

    with psycopg.connect(blank_dsn, autocommit=True) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'sim'"
            )
        }
        checksums = conn.execute(
            "SELECT checksum FROM sim.schema_migrations ORDER BY version"
        ).fetchall()
    assert {
        "experiments",
        "simulations",
        "agents",
        "agent_states",
        "events",
        "agent_decisions",
        "schema_migrations",
    } <= tables
    assert [c[0] for c in checksums] == [m.checksum for m in shipped]  # same SQL as the source
