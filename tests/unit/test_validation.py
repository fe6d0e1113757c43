"""The validator's fast column check never accepts what the value-by-value check refuses
or would convert; mappings become the same row tuples on the fast and the slow path."""

from __future__ import annotations

import collections
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim_schema import cli
from sim_schema.catalog import SPECS, Column
from sim_schema.errors import ConfigurationError, ValidationError
from sim_schema.names import validate_schema_name
from sim_schema.settings import Settings
from sim_schema.values import JsonbWire, _check_column, _encode_json, _plainly_valid, validate

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.sampled_from(["a\x00b", "\x00", "", "x"]),
    st.builds(uuid.uuid4),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
COLUMNS = [c for spec in SPECS.values() for c in spec.columns[1:] if c.kind != "jsonb"]


@settings(max_examples=300, deadline=None)
@given(column=st.sampled_from(COLUMNS), values=st.lists(ANY_VALUE, min_size=1, max_size=6))
def test_fast_check_is_sound(column: Column, values: list[Any]) -> None:
    """Plainly valid means: the exhaustive check accepts every value and changes none."""
    if _plainly_valid(column, values):
        assert _check_column("t", column, values) is None


@settings(max_examples=200, deadline=None)
@given(
    column=st.sampled_from(COLUMNS),
    good=st.lists(ANY_VALUE, min_size=1, max_size=4),
)
def test_fast_and_exhaustive_paths_give_the_same_verdict(column: Column, good: list[Any]) -> None:
    """A whole batch through `validate` fails exactly where the value-by-value check does."""
    spec = next(s for s in SPECS.values() if column in s.columns)
    base = {c.name: _valid_example(c) for c in spec.columns[1:]}
    rows = [spec.row("s", {**base, column.name: v}) for v in good]
    try:
        expected: tuple[int, str] | None = None
        _check_column(spec.name, column, [r[spec.names.index(column.name)] for r in rows])
    except ValidationError as exc:
        expected = (exc.row, exc.field)
    try:
        validate(spec.name, "s", rows)
        got: tuple[int, str] | None = None
    except ValidationError as exc:
        got = (exc.row, exc.field)
    assert got == expected


def _valid_example(column: Column) -> Any:
    return {
        "text": "x",
        "int2": 1,
        "int4": 1,
        "int8": 1,
        "float8": 1.0,
        "bool": False,
        "jsonb": {},
        "uuid": uuid.UUID(int=1),
        "text[]": [],
    }[column.kind]


MAPPINGS = [
    {"step": 1, "agent_id": "a"},  # missing keys: defaults
    {"simulation_id": "s", "step": 1, "agent_id": "a"},
    {name: None for name in SPECS["agent_states"].names[1:]} | {"step": 2, "agent_id": "b"},
    {name: 0 for name in SPECS["agent_states"].names} | {"simulation_id": "s"},
]


def test_rows_from_mappings_match_row_by_row() -> None:
    spec = SPECS["agent_states"]
    assert spec.rows("s", MAPPINGS) == [spec.row("s", m) for m in MAPPINGS]
    with pytest.raises(ValidationError, match="no such column"):
        spec.rows("s", [{"step": 1, "agent_id": "a", "colour": "red"}])
    # a defaultdict must not invent values for missing keys or hide an unknown one
    lenient = collections.defaultdict(lambda: "x", {"step": 1, "agent_id": "a"})
    assert spec.rows("s", [lenient]) == [spec.row("s", {"step": 1, "agent_id": "a"})]
    # as many keys as the table has, one of them unknown: still refused
    wrong = {name: 0 for name in spec.names[1:-1]} | {"colour": 1, "simulation_id": "s"}
    with pytest.raises(ValidationError, match="no such column"):
        spec.rows("s", [wrong])


@pytest.mark.parametrize(
    "schema", ["pg_catalog", "pg_toast", "pg_temp_3", "pg_anything", "information_schema"]
)
def test_system_schemas_are_refused(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigurationError, match=f"schema '{schema}' is a PostgreSQL system"):
        validate_schema_name(schema)
    with pytest.raises(ConfigurationError, match="system schema"):
        Settings(dsn="postgresql://nobody@127.0.0.1:1/x", schema_name=schema)
    assert cli.main(["--dsn", "postgresql://nobody@127.0.0.1:1/x", "--schema", schema,
                     "status"]) == 2  # refused before connecting
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "system schema" in err


@pytest.mark.parametrize("schema", ["Sim", "sim-x", "1sim", "a" * 64, "sim;drop", ""])
def test_schema_names_that_need_quoting_are_refused(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid schema name"):
        validate_schema_name(schema)


def test_payloads_and_values_to_encode_mix_in_one_column() -> None:
    """A source's payloads (`JsonbWire`, passed as encoded) next to values the rules encode
    (a default put in for a NULL), and a bad value among them still named by row."""
    col = SPECS["agents"].columns[SPECS["agents"].position("profile")]
    payload = JsonbWire(b'\x01{"age": 30}')
    assert _encode_json("agents", col, [payload, {}, payload]) == [payload, b"\x01{}", payload]
    with pytest.raises(ValidationError, match="row 1 field 'profile': not storable as JSON"):
        _encode_json("agents", col, [payload, {"x": float("nan")}])
