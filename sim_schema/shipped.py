"""Where the files shipped beside the code are: `migrations/` and `sql/`.

In a built wheel they live inside the package as `sim_schema/_migrations` and
`sim_schema/_sql` (pyproject.toml force-includes them); in a source checkout they are the
repository's top-level `migrations/` and `sql/` directories.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_dir(name: str) -> Path:
    packaged = resources.files("sim_schema") / f"_{name}"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / name
