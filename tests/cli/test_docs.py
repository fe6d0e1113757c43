"""Every code example in README.md and docs/*.md runs against a real database, on its own.

Convention: each fenced block tagged `python` or `sh` is one test, run by itself: a fresh
migrated database (`SIM_SCHEMA_DSN`), a fresh namespace (`__name__ == "__main__"`) and an
empty working directory, so that a reader can copy any one block and run it. A `python`
block runs as a script; an `sh` block runs each line starting with `sim-schema ` (through
the installed entry point) or `python -m sim_schema`, and expects exit code 0. Tag a block
`python no-run` or `sh no-run` only for what cannot run here (the README's install line,
a host backend).
"""

from __future__ import annotations

import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sim_schema import SimulationLogger
from sim_schema.catalog import SPECS

pytestmark = pytest.mark.slow  # see pyproject.toml: `pytest -m 'not slow'`

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path) -> list[tuple[str, str, str, int]]:
    """(language, info, code, line of the opening fence) of each fenced block."""
    text = path.read_text()
    return [
        (m[1], m[2].strip(), m[3], text.count("\n", 0, m.start()) + 1)
        for m in _BLOCK.finditer(text)
    ]


def runnable() -> list[Any]:
    return [
        pytest.param(doc, lang, code, line, id=f"{doc.name}:{line}")
        for doc in DOCS
        for lang, info, code, line in blocks(doc)
        if lang in ("python", "sh") and "no-run" not in info
    ]


def _cli() -> list[str]:
    installed = shutil.which("sim-schema", path=str(Path(sys.executable).parent))
    return [installed] if installed else [sys.executable, "-m", "sim_schema"]


def _commands(code: str) -> list[list[str]]:
    argvs = []
    for line in code.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line.startswith("sim-schema "):
            argvs.append([*_cli(), *shlex.split(line)[1:]])
        elif line.startswith("python -m sim_schema"):
            argvs.append([sys.executable, *shlex.split(line)[1:]])
    return argvs


@pytest.mark.parametrize(("doc", "lang", "code", "line"), runnable())
def test_doc_block_runs_on_its_own(
    doc: Path, lang: str, code: str, line: int, dsn: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("SIM_SCHEMA_DSN", dsn)
    monkeypatch.chdir(tmp_path)
    where = f"{doc.name}:{line}"
    if lang == "python":
        exec(compile(code, where, "exec"), {"__name__": "__main__"})
        return
    argvs = _commands(code)
    assert argvs, f"{where}: an sh block with no sim-schema command: tag it `sh no-run`"
    for argv in argvs:
        done = subprocess.run(argv, capture_output=True, text=True, env=os.environ.copy(),
                              timeout=300)  # fmt: skip
        assert done.returncode == 0, f"{where}: {shlex.join(argv[1:])}\n{done.stderr}"


def test_readme_lists_every_guide() -> None:
    readme = (ROOT / "README.md").read_text()
    guides = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert [g for g in guides if f"](docs/{g})" not in readme] == []


def test_ingest_guide_lists_every_log_method_with_its_parameters() -> None:
    guide = (ROOT / "docs" / "ingest.md").read_text()
    methods = [n for n in dir(SimulationLogger) if n.startswith("log_")]
    assert len(methods) >= 19
    empty = inspect.Parameter.empty
    for name in methods:
        signature = inspect.signature(getattr(SimulationLogger, name))
        parameters = [p.replace(annotation=empty) for p in signature.parameters.values()
                      if p.name != "self"]  # fmt: skip
        written = f"`{name}{signature.replace(parameters=parameters, return_annotation=empty)}`"
        assert written in guide, written
    # Each table's row names the columns the one-row method takes by name: all of them.
    for table, spec in SPECS.items():
        [row] = [r for r in guide.splitlines() if r.startswith(f"| `{table}` | `log_")]
        single = re.search(r"`(log_\w+)\(", row)
        assert single is not None, row
        leading = [p for p in inspect.signature(getattr(SimulationLogger, single[1])).parameters
                   if p not in ("self", "columns", "metrics")]  # fmt: skip
        listed = [c.strip() for c in row.rstrip(" |").rsplit("|", 1)[1].split(",")]
        assert listed == [c for c in spec.names if c not in ("simulation_id", *leading)], table
    assert "record_agent_death" in guide and "death_step" in guide
