"""`sim-schema info | list | summary | compare | final | agents-over-time | query`: the
analyst's read commands (the predecessor query tool's commands, across a whole database).

Output is an aligned table on a terminal, `--json` (global flag) or `--csv` for scripts.
Metric and parameter names are checked against the schema first; a wrong one exits 2
with the valid names.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import astuple, fields
from datetime import datetime
from typing import Any, TextIO

import psycopg

from ..errors import ConfigurationError, NotFound
from ..read import queries, sqllib
from ..readiness import check_schema
from ..store import Store, connect
from . import common

Conn = psycopg.AsyncConnection[Any]


def register(sub: Any) -> None:
    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], int],
            *, experiment: bool = True, simulations: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        if experiment:
            p.add_argument("--experiment", help="only simulations of this experiment")
        if simulations:
            p.add_argument("--simulation", action="append", metavar="ID",
                           help="only this simulation (repeatable)")
        p.add_argument("--csv", action="store_true", help="CSV on stdout")
        p.set_defaults(handler=handler)
        return p

    add("info", "experiments and how many simulations each has", run_info, simulations=False)
    add("list", "simulations: experiment, status, steps, parameters", run_list)
    add("summary", "per simulation: agents, births, deaths, final step metrics", run_summary)
    p = add("compare", "a step metric over time across simulations", run_compare)
    p.add_argument("--metric", required=True,
                   help="numeric column of simulation_steps or metrics.<key>")
    p.add_argument("--start-step", type=int)
    p.add_argument("--end-step", type=int)
    p = add("final", "final-step summary per simulation (or grouped by a parameter)", run_final)
    p.add_argument("--by-parameter", metavar="KEY",
                   help="group simulations by this key of their parameters")
    p.add_argument("--metric", default="total_agents",
                   help="final-step metric aggregated with --by-parameter (default %(default)s)")
    p = add("agents-over-time", "agents alive per step and type in one simulation",
            run_agents_over_time, experiment=False, simulations=False)
    p.add_argument("--simulation", required=True, metavar="ID")
    p = add("query", "run a query of the SQL library (no NAME: list them)", run_query,
            experiment=False, simulations=False)
    p.add_argument("name", nargs="?", help="library query name (file name without .sql)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a query parameter (repeatable)")


# --- plumbing ------------------------------------------------------------------------


def _with_conn(args: argparse.Namespace, work: Callable[[Conn], Awaitable[int]]) -> int:
    async def main() -> int:
        async with Store(common.settings_from(args)) as store, store.connection() as conn:
            return await work(conn)

    return asyncio.run(main())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}".rstrip("0").rstrip(".") if value == value else "NaN"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    return str(value)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str | dict | list):
        return value
    return _cell(value)


class Output:
    """Writes rows as a table (collected, then aligned), CSV or a JSON array (streamed)."""

    def __init__(self, args: argparse.Namespace, columns: Sequence[str],
                 out: TextIO | None = None) -> None:
        self.mode = "json" if args.json else "csv" if getattr(args, "csv", False) else "table"
        self.columns = list(columns)
        self.out = out or sys.stdout
        self.rows: list[list[str]] = []
        self.count = 0
        self._csv = csv.writer(self.out) if self.mode == "csv" else None
        if self._csv is not None:
            self._csv.writerow(self.columns)
        elif self.mode == "json":
            self.out.write("[")

    def write(self, row: Sequence[Any]) -> None:
        if self._csv is not None:
            self._csv.writerow(_cell(v) for v in row)
        elif self.mode == "json":
            obj = {c: _json_value(v) for c, v in zip(self.columns, row, strict=True)}
            self.out.write(("," if self.count else "") + "\n" + json.dumps(obj))
        else:
            self.rows.append([_cell(v) for v in row])
        self.count += 1

    def close(self, empty: str = "(no rows)") -> None:
        if self.mode == "json":
            self.out.write("\n]\n" if self.count else "]\n")
        elif self.mode == "table":
            if not self.rows:
                print(empty, file=self.out)
                return
            widths = [max(len(c), *(len(r[i]) for r in self.rows))
                      for i, c in enumerate(self.columns)]
            print("  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))
                  .rstrip(), file=self.out)
            print("  ".join("-" * w for w in widths), file=self.out)
            for r in self.rows:
                print("  ".join(_align(v, w) for v, w in zip(r, widths, strict=True)).rstrip(),
                      file=self.out)


def _align(value: str, width: int) -> str:
    numeric = value.replace(".", "", 1).replace("-", "", 1).isdigit()
    return value.rjust(width) if numeric else value.ljust(width)


def _emit(args: argparse.Namespace, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    output = Output(args, columns)
    for row in rows:
        output.write(row)
    output.close()
    return common.EXIT_OK


def _emit_records(args: argparse.Namespace, cls: type[Any], records: Iterable[Any]) -> int:
    return _emit(args, [f.name for f in fields(cls)], (astuple(r) for r in records))


async def _check_scope(conn: Conn, args: argparse.Namespace) -> None:
    """Named simulations and experiments must exist (a typo is not an empty result)."""
    if getattr(args, "experiment", None) is not None:
        await queries.experiments(conn, args.experiment)
    wanted = getattr(args, "simulation", None)
    if wanted:
        ids = wanted if isinstance(wanted, list) else [wanted]
        found = {s.simulation_id for s in await queries.simulation_summaries(
            conn, simulation_ids=ids)}
        missing = [i for i in ids if i not in found]
        if missing:
            raise NotFound(f"simulation(s) not found: {', '.join(missing)}")


# --- handlers ------------------------------------------------------------------------


def run_info(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        return _emit_records(args, queries.ExperimentInfo,
                             await queries.experiments(conn, args.experiment))
    return _with_conn(args, work)


def run_list(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        await _check_scope(conn, args)
        rows = await queries.simulation_summaries(
            conn, simulation_ids=args.simulation, experiment_id=args.experiment)
        return _emit(args, ["simulation_id", "experiment_id", "name", "status", "step_count",
                            "parameters"],
                     ((r.simulation_id, r.experiment_id, r.name, r.status, r.step_count,
                       r.parameters) for r in rows))
    return _with_conn(args, work)


def run_summary(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        await _check_scope(conn, args)
        rows = await queries.simulation_summaries(
            conn, simulation_ids=args.simulation, experiment_id=args.experiment)
        return _emit(args, ["simulation_id", "status", "step_count", "agents", "births",
                            "deaths", "final_step", "final_total_agents",
                            "final_average_agent_health"],
                     ((r.simulation_id, r.status, r.step_count, r.agents, r.births, r.deaths,
                       r.final_step, r.final_total_agents, r.final_average_agent_health)
                      for r in rows))
    return _with_conn(args, work)


def run_compare(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        await _check_scope(conn, args)
        points = queries.compare_metric(
            conn, args.metric, simulation_ids=args.simulation, experiment_id=args.experiment,
            start_step=args.start_step, end_step=args.end_step)
        if args.json or args.csv:  # long format, streamed
            output = Output(args, ["simulation_id", "step", args.metric])
            async for p in points:
                output.write((p.simulation_id, p.step, p.value))
            output.close()
            return common.EXIT_OK
        # A terminal gets one column per simulation.
        table: dict[int, dict[str, float | None]] = {}
        sims: dict[str, None] = {}
        async for p in points:
            sims[p.simulation_id] = None
            table.setdefault(p.step, {})[p.simulation_id] = p.value
        return _emit(args, ["step", *sims],
                     ([step, *(table[step].get(s) for s in sims)] for step in sorted(table)))
    return _with_conn(args, work)


def run_final(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        await _check_scope(conn, args)
        if args.by_parameter is not None:
            groups = await queries.aggregate_by_parameter(
                conn, args.by_parameter, args.metric,
                simulation_ids=args.simulation, experiment_id=args.experiment)
            return _emit(args, [args.by_parameter, "simulations", f"mean_{args.metric}",
                                f"min_{args.metric}", f"max_{args.metric}"],
                         (astuple(g) for g in groups))
        rows = await queries.final_summary(
            conn, simulation_ids=args.simulation, experiment_id=args.experiment)
        return _emit(args, ["simulation_id", "experiment_id", "parameters", "final_step",
                            "final_total_agents", "final_total_resources",
                            "final_average_agent_health", "final_average_reward"],
                     ((r.simulation_id, r.experiment_id, r.parameters, r.final_step,
                       r.final_total_agents, r.final_total_resources,
                       r.final_average_agent_health, r.final_average_reward) for r in rows))
    return _with_conn(args, work)


def run_agents_over_time(args: argparse.Namespace) -> int:
    async def work(conn: Conn) -> int:
        await _check_scope(conn, args)
        points = await queries.population_over_time(conn, args.simulation)
        types = sorted({p.agent_type for p in points})
        by_step: dict[int, dict[str, int]] = {}
        for p in points:
            by_step.setdefault(p.step, {})[p.agent_type] = p.agents
        return _emit(args, ["step", *types, "total"],
                     ([s, *(c.get(t, 0) for t in types), sum(c.values())]
                      for s, c in sorted(by_step.items())))
    return _with_conn(args, work)


def _params(pairs: Sequence[str]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigurationError(f"--param {pair!r}: use KEY=VALUE")
        params[key.strip()] = value
    return params


def run_query(args: argparse.Namespace) -> int:
    if args.name is None:
        library = sqllib.load_library()
        return _emit(args, ["name", "parameters", "answers"],
                     ((q.name, ", ".join(q.parameters), q.title) for q in library.values()))
    query = sqllib.get_query(args.name)
    params = query.bind(_params(args.param))
    # A server-side cursor: rows arrive in batches, and the columns are known up front
    # (a CSV header even for an empty result).
    settings = common.settings_from(args)
    with connect(settings) as conn:
        check_schema(conn, settings.schema_name)  # a clear error before the cursor's
        _run_query(args, conn, query, params)
    return common.EXIT_OK


def _run_query(
    args: argparse.Namespace,
    conn: psycopg.Connection[Any],
    query: sqllib.LibraryQuery,
    params: dict[str, Any],
) -> None:
    with conn.transaction(), conn.cursor(name="sim_schema_query") as cur:
        try:
            cur.execute(query.statement, params)
        except psycopg.errors.DataError as exc:  # a parameter value of the wrong type
            first = str(exc).strip().splitlines()[0]
            raise ConfigurationError(
                f"query {query.name!r}: bad parameter value: {first}"
            ) from None
        output = Output(args, [c.name for c in cur.description or []])
        for row in cur:
            output.write(row)
        output.close()
