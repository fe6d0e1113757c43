"""sim_schema: PostgreSQL storage for agent-based simulations."""

from .errors import SimSchemaError
from .migration import Migration, SqlMigration, host_migrations, load_migrations
from .runner import MigrationRunner, migrate, migrate_async
from .settings import Settings
from .store import Store

__all__ = [
    "Migration",
    "MigrationRunner",
    "Settings",
    "SimSchemaError",
    "SqlMigration",
    "Store",
    "host_migrations",
    "load_migrations",
    "migrate",
    "migrate_async",
]
__version__ = "0.1.0"
