"""Every code example in README.md and docs/*.md runs against a real database.

Convention: a fenced block tagged `python` runs (all blocks of one file share one
namespace, in order); a block tagged `sh` runs each line starting with `sim-schema `
(or `python -m sim_schema`) and expects exit code 0. `SIM_SCHEMA_DSN` points at a fresh
migrated database, the working directory is a temporary one. Tag a block `python no-run`
or `sh no-run` only for what cannot run here (the README's install line, a host backend).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str, str]]:
    return [(m[1], m[2].strip(), m[3]) for m in _BLOCK.finditer(path.read_text())]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_doc_examples_run(doc: Path, dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIM_SCHEMA_DSN", dsn)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__doc__"}
    ran = 0
    for lang, info, code in blocks(doc):
        if "no-run" in info:
            continue
        if lang == "python":
            exec(compile(code, f"{doc.name}:python-block", "exec"), namespace)
            ran += 1
        elif lang == "sh":
            for line in code.splitlines():
                line = line.strip()
                if line.startswith("sim-schema ") or line.startswith("python -m sim_schema"):
                    argv = shlex.split(line)
                    if argv[0] == "sim-schema":
                        argv = [sys.executable, "-m", "sim_schema", *argv[1:]]
                    else:
                        argv = [sys.executable, *argv[1:]]
                    done = subprocess.run(argv, capture_output=True, text=True,
                                          env=os.environ.copy(), timeout=300)
                    assert done.returncode == 0, f"{doc.name}: {line}\n{done.stderr}"
                    ran += 1
    if ran == 0:
        # Report it instead of passing: a doc whose examples never run proves nothing.
        pytest.skip(f"{doc.name} has no runnable examples")
