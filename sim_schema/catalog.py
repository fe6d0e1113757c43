"""The bulk-ingest tables: each one's COPY column list, types, NULL rules and defaults.

The only module that knows each table's COPY column spec. Rows are tuples in the spec's
column order, `simulation_id` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Literal

from .errors import SimSchemaError, ValidationError

Kind = Literal["text", "int4", "int8", "float8", "bool", "jsonb", "uuid", "text[]"]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Column:
    """One COPY column: its PostgreSQL type, whether NULL is allowed, a lower bound."""

    name: str
    kind: Kind
    nullable: bool = True
    minimum: int | None = None  # mirrors the table's `CHECK (col >= n)`, caught before COPY
    default: Any = None  # what a mapping without this key gets (the column's DEFAULT)


@dataclass(frozen=True)
class TableSpec:
    """The COPY column list of one table (`simulation_id` first), in the order rows carry."""

    name: str
    columns: tuple[Column, ...]
    names: tuple[str, ...] = field(init=False)
    json_positions: tuple[int, ...] = field(init=False)
    _all: Callable[[Mapping[str, Any]], Row] = field(init=False, repr=False)
    _all_but_simulation: Callable[[Mapping[str, Any]], Row] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(c.name for c in self.columns)
        object.__setattr__(self, "names", names)
        positions = tuple(i for i, c in enumerate(self.columns) if c.kind == "jsonb")
        object.__setattr__(self, "json_positions", positions)
        object.__setattr__(self, "_all", _getter(names))
        object.__setattr__(self, "_all_but_simulation", _getter(names[1:]))

    def row(self, simulation_id: str, values: Mapping[str, Any]) -> Row:
        """A row tuple from a mapping of column names (missing keys get the column default)."""
        unknown = values.keys() - self.names
        if unknown:
            raise ValidationError(self.name, -1, sorted(unknown)[0], "no such column")
        get = values.get
        return (
            get("simulation_id", simulation_id),
            *[get(c.name, c.default) for c in self.columns[1:]],
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


def _cols(*specs: tuple[Any, ...]) -> tuple[Column, ...]:
    return (Column("simulation_id", "text", nullable=False), *tuple(Column(*s) for s in specs))


# NOT NULL columns with a server DEFAULT get the same default client-side: COPY of an
# explicit NULL would violate NOT NULL. Identity columns (action_id, ...) are not copied.
SPECS: dict[str, TableSpec] = {
    spec.name: spec
    for spec in (
        TableSpec(
            "agents",
            _cols(
                ("agent_id", "text", False),
                ("agent_type", "text", False),
                ("name", "text"),
                ("birth_step", "int4", False, 0, 0),
                ("death_step", "int4"),
                ("position_x", "float8"),
                ("position_y", "float8"),
                ("position_z", "float8"),
                ("initial_resources", "float8"),
                ("starting_health", "float8"),
                ("starvation_threshold", "int4"),
                ("genome_id", "text"),
                ("generation", "int4", False, 0, 0),
                ("parent_ids", "text[]", False, None, ()),
                ("profile", "jsonb", False, None, {}),
                ("config", "jsonb", False, None, {}),
            ),
        ),
        TableSpec(
            "agent_states",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("position_x", "float8"),
                ("position_y", "float8"),
                ("position_z", "float8"),
                ("resource_level", "float8"),
                ("health", "float8"),
                ("is_defending", "bool", False, None, False),
                ("total_reward", "float8"),
                ("age", "int4", True, 0),
                ("profile", "jsonb"),
                ("memory", "jsonb"),
                ("relationships", "jsonb"),
                ("extras", "jsonb"),
            ),
        ),
        TableSpec(
            "agent_actions",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("action_type", "text", False),
                ("action_target_id", "text"),
                ("state_before_step", "int4"),
                ("state_after_step", "int4"),
                ("resources_before", "float8"),
                ("resources_after", "float8"),
                ("reward", "float8"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "resource_states",
            _cols(
                ("step", "int4", False, 0),
                ("resource_id", "int4", False),
                ("amount", "float8", False),
                ("position_x", "float8"),
                ("position_y", "float8"),
            ),
        ),
        TableSpec(
            "simulation_steps",
            _cols(
                ("step", "int4", False, 0),
                ("total_agents", "int4", True, 0),
                ("system_agents", "int4"),
                ("independent_agents", "int4"),
                ("control_agents", "int4"),
                ("total_resources", "float8"),
                ("average_agent_resources", "float8"),
                ("births", "int4", True, 0),
                ("deaths", "int4", True, 0),
                ("current_max_generation", "int4"),
                ("resource_efficiency", "float8"),
                ("resource_distribution_entropy", "float8"),
                ("average_agent_health", "float8"),
                ("average_agent_age", "float8"),
                ("average_reward", "float8"),
                ("combat_encounters", "int4"),
                ("successful_attacks", "int4"),
                ("resources_shared", "float8"),
                ("genetic_diversity", "float8"),
                ("dominant_genome_ratio", "float8"),
                ("resources_consumed", "float8"),
                ("metrics", "jsonb"),
            ),
        ),
        TableSpec(
            "learning_experiences",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("module_type", "text", False),
                ("module_id", "text"),
                ("action_taken", "int4"),
                ("action_taken_mapped", "text"),
                ("reward", "float8"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "health_incidents",
            _cols(
                ("step", "int4", False, 0),
                ("agent_id", "text", False),
                ("health_before", "float8"),
                ("health_after", "float8"),
                ("cause", "text", False),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "interactions",
            _cols(
                ("step", "int4", False, 0),
                ("source_type", "text", False),
                ("source_id", "text", False),
                ("target_type", "text", False),
                ("target_id", "text", False),
                ("interaction_type", "text", False),
                ("action_type", "text"),
                ("details", "jsonb"),
            ),
        ),
        TableSpec(
            "events",
            _cols(
                ("event_id", "uuid", False),
                ("step", "int4", False, 0),
                ("event_type", "text", False),
                ("source_type", "text"),
                ("source_id", "text"),
                ("target_type", "text"),
                ("target_id", "text"),
                ("priority", "int4", False, None, 0),
                ("payload", "jsonb", False, None, {}),
            ),
        ),
    )
}

# Tables whose rows reference agents: their batches must be written after the agents'.
AGENT_DEPENDENT = frozenset(
    {"agent_states", "agent_actions", "learning_experiences", "health_incidents"}
)


def spec_of(table: str) -> TableSpec:
    try:
        return SPECS[table]
    except KeyError:
        raise SimSchemaError(
            f"{table!r} is not a bulk-ingest table (one of: {', '.join(sorted(SPECS))})"
        ) from None
