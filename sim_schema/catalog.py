"""One catalog of the tables, read from the record classes of `sim_schema.models`.

For every table: its columns in table order (name, PostgreSQL type, nullability, the
default a writer that omits it gets, a lower bound, whether inserts write it), its primary
key, its parent foreign keys and whether it has a step. Everything that needs a column
list derives it from here: the COPY specs of the logged tables (`SPECS`), the logger's
rows, the repositories' column lists, export's table list, the foreign-key order the
logger writes in. `tests/unit/test_catalog.py` compares the catalog with a migrated
database (names, types, nullability, order) and with docs/schema.md.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from pydantic.fields import FieldInfo

from . import models
from .errors import SimSchemaError, ValidationError
from .models import Parent, Pg, Record, Storage

Kind = Literal[
    "text", "int2", "int4", "int8", "float8", "bool", "jsonb", "uuid", "text[]", "timestamptz"
]
Row = tuple[Any, ...]

_KINDS: dict[str, Kind] = {
    "text": "text",
    "smallint": "int2",
    "integer": "int4",
    "bigint": "int8",
    "double precision": "float8",
    "boolean": "bool",
    "jsonb": "jsonb",
    "uuid": "uuid",
    "text[]": "text[]",
    "timestamp with time zone": "timestamptz",
}


@dataclass(frozen=True)
class Column:
    """One column: its type, whether NULL is allowed, the default a writer that leaves it
    out gets (mirrors the column's DEFAULT), a lower bound (`CHECK (col >= n)`)."""

    name: str
    type: str  # as `format_type` prints it
    nullable: bool = True
    minimum: int | None = None
    default: Any = None
    written: bool = True  # inserts write it (False: the server or a later UPDATE fills it)
    identity: bool = False
    factory: Callable[[], Any] | None = None  # makes the default per row (client-made ids)
    ordinal: bool = False  # numbered by the logger when not given (`Numbering`)

    @property
    def kind(self) -> Kind:
        return _KINDS[self.type]


@dataclass(frozen=True)
class Table:
    """One table of the catalog."""

    name: str
    model: type[Record]
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    parents: tuple[Parent, ...]
    logged: bool
    stored: Storage | None = None  # set: a view over this table with integer keys

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def has_step(self) -> bool:
        return "step" in self.names

    @property
    def per_simulation(self) -> bool:
        return "simulation_id" in self.names and self.name != "simulations"

    @property
    def inserted(self) -> tuple[Column, ...]:
        """The columns an insert of a new row writes (identity ids are left to the server)."""
        return tuple(c for c in self.columns if c.written and not c.identity)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


def _pg(annotation: Any) -> tuple[Pg, bool]:
    """The Pg metadata inside a field's annotation, and whether `None` is allowed."""
    nullable = False
    stack = [annotation]
    while stack:
        current = stack.pop()
        if current is type(None):
            nullable = True
        elif typing.get_origin(current) is typing.Annotated:
            found = [m for m in current.__metadata__ if isinstance(m, Pg)]
            if found:
                rest = [a for a in typing.get_args(annotation) if a is type(None)]
                return found[0], nullable or bool(rest)
        elif typing.get_origin(current) in (typing.Union, types.UnionType):
            stack.extend(typing.get_args(current))
    raise TypeError(f"field annotation {annotation!r} declares no PostgreSQL type (Pg)")


def _default(info: FieldInfo) -> tuple[Any, Callable[[], Any] | None]:
    """(the default, or a factory that makes one per row for values that must differ)."""
    factory = info.default_factory
    if factory is None:
        return (None if info.is_required() else info.default), None
    made = factory()  # type: ignore[call-arg]
    if isinstance(made, list):
        return (), None  # an empty text[]: one shared, immutable value
    if isinstance(made, dict) and not made:
        return made, None  # an empty JSON object, encoded when logged: never mutated
    return None, factory  # type: ignore[return-value]


def _table(model: type[Record]) -> Table:
    columns = []
    for name, info in model.model_fields.items():
        pg, nullable = _pg(info.annotation if not info.metadata else _annotated(info))
        # None in a record: not numbered yet (the column itself is NOT NULL)
        nullable = nullable and not (pg.identity or pg.ordinal)
        default, factory = _default(info)
        columns.append(
            Column(
                name,
                pg.type,
                nullable,
                pg.minimum,
                default,
                pg.written,
                pg.identity,
                factory,
                pg.ordinal,
            )
        )
    return Table(
        model.table, model, tuple(columns), model.key, model.parents, model.logged, model.stored
    )


def _annotated(info: FieldInfo) -> Any:
    """pydantic moves the metadata of a top-level `Annotated` into `info.metadata`."""
    return typing.Annotated[(info.annotation, *info.metadata)]


# The record that holds every column of each table, parents before children: this order
# is the order tables are exported, counted and written in.
ROW_MODELS: tuple[type[Record], ...] = (
    models.Experiment,
    models.Simulation,
    models.SimulationConfig,
    models.Agent,
    models.AgentState,
    models.AgentAction,
    models.ResourceState,
    models.SimulationStep,
    models.LearningExperience,
    models.HealthIncident,
    models.Interaction,
    models.EnvironmentState,
    models.Event,
    models.AgentDecision,
    models.IngestBatch,
)
TABLES: dict[str, Table] = {m.table: _table(m) for m in ROW_MODELS}
INTERNAL_TABLES = frozenset({"ingest_batches"})  # bookkeeping, not simulation data

# Every table holding rows of one simulation (`simulations` itself first), parents first;
# the data tables are those without the internal bookkeeping.
SIMULATION_TABLES: tuple[str, ...] = tuple(
    name for name, t in TABLES.items() if "simulation_id" in t.names
)
DATA_TABLES: tuple[str, ...] = tuple(t for t in SIMULATION_TABLES if t not in INTERNAL_TABLES)


def table(name: str) -> Table:
    try:
        return TABLES[name]
    except KeyError:
        raise SimSchemaError(f"no table {name!r} (one of: {', '.join(TABLES)})") from None


# --- COPY specs of the logged tables -----------------------------------------------------


@dataclass(frozen=True)
class Numbering:
    """How the logger numbers a table's rows that come without their key: `column` gets
    the n-th row among the logged rows sharing the values of `prefix` (n from 0, in the
    order logged), so a replayed run gives its rows the same keys. `kind` "ordinal": n
    itself; "uuid": an id made from (simulation, prefix values, n), `ids.replay_id`."""

    column: str
    prefix: tuple[str, ...]
    kind: Literal["ordinal", "uuid"]
    namespace: str = ""  # "uuid": mixed into the ids (`Record.replay_namespace`)


def _numbering(t: Table) -> Numbering | None:
    for c in t.columns:
        if c.ordinal:
            prefix = tuple(n for n in t.key if n not in ("simulation_id", c.name))
            return Numbering(c.name, prefix, "ordinal")
    derived = t.model.numbered_id
    if derived is not None:
        return Numbering(derived, ("step",), "uuid", t.model.replay_namespace)
    return None


@dataclass(frozen=True)
class TableSpec:
    """The COPY column list of one logged table (`simulation_id` first), in row order.

    `target` is the table COPY writes: the table itself, or for a stored table (a view
    over integer keys) its `_data` table, whose `target_names` replace `simulation_id` and
    `agent_id` by `sim_key` and `agent_key`.
    """

    name: str
    columns: tuple[Column, ...]
    storage: Storage | None = None
    numbering: Numbering | None = None
    names: tuple[str, ...] = field(init=False)
    json_positions: tuple[int, ...] = field(init=False)
    target: str = field(init=False)
    target_names: tuple[str, ...] = field(init=False)
    agent_position: int | None = field(init=False)  # where agent_id is, if mapped to a key
    _all: Callable[[Mapping[str, Any]], Row] = field(init=False, repr=False)
    _all_but_simulation: Callable[[Mapping[str, Any]], Row] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns)
        object.__setattr__(self, "names", names)
        positions = tuple(i for i, c in enumerate(self.columns) if c.kind == "jsonb")
        object.__setattr__(self, "json_positions", positions)
        storage = self.storage
        object.__setattr__(self, "target", storage.table if storage else self.name)
        object.__setattr__(
            self, "target_names", tuple(storage.column(n) for n in names) if storage else names
        )
        mapped = storage is not None and storage.column("agent_id") != "agent_id"
        object.__setattr__(
            self, "agent_position", names.index("agent_id") if mapped else None
        )
        object.__setattr__(self, "_all", _getter(names))
        object.__setattr__(self, "_all_but_simulation", _getter(names[1:]))

    def position(self, name: str) -> int:
        return self.names.index(name)

    def row(self, simulation_id: str, values: Mapping[str, Any]) -> Row:
        """A row tuple from a mapping of column names (missing keys get the column default;
        a missing numbered column is None: the logger numbers it, `Numbering`)."""
        unknown = values.keys() - self.names
        if unknown:
            name = sorted(unknown)[0]
            raise ValidationError(
                self.name, -1, name, f"no such column (columns: {', '.join(self.names[1:])})"
            )
        get = values.get
        numbered = self.numbering.column if self.numbering else None
        return (
            get("simulation_id", simulation_id),
            *[
                get(c.name, c.default)
                if c.factory is None or c.name in values or c.name == numbered
                else c.factory()
                for c in self.columns[1:]
            ],
        )

    def rows(self, simulation_id: str, mappings: Iterable[Mapping[str, Any]]) -> list[Row]:
        """`row` for many mappings; one C-level item lookup for those that name every column.

        A dict with exactly the table's keys (with or without `simulation_id`) cannot hold
        an unknown key, so only the others need `row`'s checks and defaults.
        """
        width = len(self.names)
        every, every_but_simulation = self._all, self._all_but_simulation
        prefix = (simulation_id,)
        out: list[Row] = []
        append = out.append
        for m in mappings:
            size = len(m) if type(m) is dict else -1  # a defaultdict would invent values
            try:
                if size == width:
                    append(every(m))
                    continue
                if size == width - 1:
                    append(prefix + every_but_simulation(m))
                    continue
            except KeyError:
                pass
            append(self.row(simulation_id, m))
        return out


def _getter(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], Row]:
    """The values of `names` as a tuple (itemgetter of one name returns a bare value)."""
    if len(names) == 1:
        only = names[0]
        return lambda m: (m[only],)
    return itemgetter(*names)


SPECS: dict[str, TableSpec] = {
    t.name: TableSpec(t.name, t.inserted, t.stored, _numbering(t))
    for t in TABLES.values()
    if t.logged
}

# The logged tables each logged table references (agents, events): a batch is written
# after the batches of these that were logged before it.
WRITTEN_AFTER: dict[str, tuple[str, ...]] = {
    name: tuple(p.table for p in t.parents if p.table in SPECS) for name, t in TABLES.items()
    if t.logged
}


def spec_of(table: str) -> TableSpec:
    try:
        return SPECS[table]
    except KeyError:
        raise SimSchemaError(
            f"{table!r} is not a table the logger writes (one of: {', '.join(SPECS)})"
        ) from None
