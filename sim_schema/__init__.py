"""sim_schema: PostgreSQL storage for agent-based simulations."""

from .errors import SimSchemaError
from .migration import Migration, SqlMigration, load_migrations

__all__ = ["Migration", "SimSchemaError", "SqlMigration", "load_migrations"]
__version__ = "0.1.0"
