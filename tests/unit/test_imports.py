"""Every module imports on its own in a fresh interpreter (no import cycle hides behind
another import), and no command module imports the CLI entry module."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import sim_schema

PACKAGE = Path(sim_schema.__file__).resolve().parent
MODULES = sorted(
    m.name for m in pkgutil.walk_packages([str(PACKAGE)], prefix="sim_schema.")
    if not m.name.endswith("__main__")
)


def test_the_package_has_its_layers() -> None:
    for layer in ("migrations", "ingest", "read", "repositories", "cli", "demo"):
        assert f"sim_schema.{layer}" in MODULES


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_module_imports_alone(module: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_commands_never_import_the_entry_module() -> None:
    for path in (PACKAGE / "cli").glob("*.py"):
        if path.name in ("main.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = (node.module or "") if node.level else node.module or ""
                names = {a.name for a in node.names}
                assert not (node.level == 1 and (target == "main" or "main" in names)), path
                assert target not in ("sim_schema.cli", "sim_schema.cli.main"), path
