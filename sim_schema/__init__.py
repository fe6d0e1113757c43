"""sim_schema: PostgreSQL storage for agent-based simulations.

The front door: everything a service, a deploy job or a notebook needs is importable from
here. `repositories` (row-at-a-time data access), `queries` (the typed read API),
`sqllib` (the SQL library), `models` (the records), `catalog` (the tables) and `admin`
(delete, archive, grants) are modules, used as `sim_schema.queries.agent_history`.
"""

from . import admin, catalog, models, repositories
from .errors import (
    AlreadyExists,
    ArchiveRefused,
    ConfigurationError,
    ConnectionFailed,
    DatabaseTimeout,
    IngestError,
    InvalidIndexError,
    LifecycleError,
    LockTimeout,
    MigrationDefinitionError,
    MigrationError,
    MigrationFailed,
    NotFound,
    PartialMigrationFailed,
    ReplayConflict,
    SchemaNotReady,
    SimSchemaError,
    UntrackedSchema,
    ValidationError,
    VerificationError,
)
from .ingest.experiment import ExperimentManager, SimulationContext
from .ingest.logger import RetryPolicy, SimulationLogger, SyncSimulationLogger
from .ingest.resume import discard_steps_from, resume_step
from .ingest.writer import BulkWriter, CopyBatch, copy_rows
from .migrations.migration import Migration, SqlMigration, host_migrations, load_migrations
from .migrations.runner import MigrationRunner, migrate, migrate_async
from .read import queries, sqllib
from .read.export import export, export_async, export_decisions, export_decisions_async
from .readiness import check_schema, check_schema_async
from .settings import Settings
from .store import Store, connect

__all__ = [
    "AlreadyExists",
    "ArchiveRefused",
    "BulkWriter",
    "ConfigurationError",
    "ConnectionFailed",
    "CopyBatch",
    "DatabaseTimeout",
    "ExperimentManager",
    "IngestError",
    "InvalidIndexError",
    "LifecycleError",
    "LockTimeout",
    "Migration",
    "MigrationDefinitionError",
    "MigrationError",
    "MigrationFailed",
    "MigrationRunner",
    "NotFound",
    "PartialMigrationFailed",
    "ReplayConflict",
    "RetryPolicy",
    "SchemaNotReady",
    "Settings",
    "SimSchemaError",
    "SimulationContext",
    "SimulationLogger",
    "SqlMigration",
    "Store",
    "SyncSimulationLogger",
    "UntrackedSchema",
    "ValidationError",
    "VerificationError",
    "admin",
    "catalog",
    "check_schema",
    "check_schema_async",
    "connect",
    "copy_rows",
    "discard_steps_from",
    "export",
    "export_async",
    "export_decisions",
    "export_decisions_async",
    "host_migrations",
    "load_migrations",
    "migrate",
    "migrate_async",
    "models",
    "queries",
    "repositories",
    "resume_step",
    "sqllib",
]
__version__ = "0.1.0"
