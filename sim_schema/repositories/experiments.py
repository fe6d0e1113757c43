"""Experiments: create, read, list, merge-update, and the status lifecycle.

Lifecycle (enforced by one conditional UPDATE, so concurrent callers cannot both win):
``created -> running -> completed``; ``failed`` and ``aborted`` from ``created`` or
``running`` (an experiment can fail while it is being set up). ``completed -> running``
only when asked for explicitly (`reopen_experiment`: more runs for a finished
experiment); ``failed`` and ``aborted`` are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from psycopg import sql

from .. import readiness
from ..admin import delete_experiment_work
from ..errors import AlreadyExists, LifecycleError, NotFound
from ..models import Experiment, ExperimentStatus
from ..paging import Cursor
from ..values import param
from ._sql import Conn, checked, columns, fetch_one, select_rows

_S = ExperimentStatus

# Transition name -> (target status, statuses it may start from).
TRANSITIONS: dict[str, tuple[ExperimentStatus, tuple[ExperimentStatus, ...]]] = {
    "start": (_S.RUNNING, (_S.CREATED,)),
    "complete": (_S.COMPLETED, (_S.RUNNING,)),
    "fail": (_S.FAILED, (_S.CREATED, _S.RUNNING)),
    "abort": (_S.ABORTED, (_S.CREATED, _S.RUNNING)),
    "reopen": (_S.RUNNING, (_S.COMPLETED,)),
}


# DO NOTHING on a taken id: RETURNING then yields no row, which the callers interpret.
_INSERT = sql.SQL(
    "INSERT INTO experiments (experiment_id, name, description, hypothesis, variables,"
    " tags, metadata, folder_path) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (experiment_id) DO NOTHING RETURNING {}"
).format(columns(Experiment))


def _params(
    experiment_id: str,
    name: str,
    description: str | None,
    hypothesis: str | None,
    variables: dict[str, Any] | None,
    tags: dict[str, Any] | None,
    metadata: dict[str, Any] | None,
    folder_path: str | None,
) -> tuple[Any, ...]:
    values = checked(
        "experiments", experiment_id=experiment_id, name=name, description=description,
        hypothesis=hypothesis, variables=variables or {}, tags=tags or {},
        metadata=metadata or {}, folder_path=folder_path,
    )  # fmt: skip
    return tuple(values.values())


async def _insert(conn: Conn, params: tuple[Any, ...]) -> Experiment | None:
    """INSERT ... ON CONFLICT DO NOTHING: the new experiment, or None if the id is taken."""
    return await fetch_one(conn, Experiment, _INSERT, params)


async def create_experiment(
    conn: Conn,
    experiment_id: str,
    name: str,
    *,
    description: str | None = None,
    hypothesis: str | None = None,
    variables: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    folder_path: str | None = None,
) -> Experiment:
    """A new experiment in status ``created``; `AlreadyExists` if the id is taken."""
    row = await _insert(
        conn,
        _params(
            experiment_id, name, description, hypothesis, variables, tags, metadata, folder_path
        ),
    )
    if row is None:
        raise AlreadyExists(f"experiment {experiment_id!r} already exists")
    return row


async def get_or_create_experiment(
    conn: Conn,
    experiment_id: str,
    name: str,
    *,
    description: str | None = None,
    hypothesis: str | None = None,
    variables: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    folder_path: str | None = None,
) -> Experiment:
    """The experiment with this id, created as given if missing (an existing one is unchanged)."""
    row = await _insert(
        conn,
        _params(
            experiment_id, name, description, hypothesis, variables, tags, metadata, folder_path
        ),
    )
    return row if row is not None else await get_experiment(conn, experiment_id)


async def find_experiment(conn: Conn, experiment_id: str) -> Experiment | None:
    """The experiment, or None if there is none with this id."""
    query = sql.SQL("SELECT {} FROM experiments WHERE experiment_id = %s").format(
        columns(Experiment)
    )
    return await fetch_one(conn, Experiment, query, (experiment_id,))


async def get_experiment(conn: Conn, experiment_id: str) -> Experiment:
    """The experiment; `NotFound` if there is none with this id."""
    row = await find_experiment(conn, experiment_id)
    if row is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return row


async def list_experiments(
    conn: Conn,
    *,
    status: ExperimentStatus | str | None = None,
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[Experiment]:
    """Experiments in (created_at, experiment_id) order (oldest first), filtered by the
    arguments given: in `status`, named exactly `name`, whose tags hold every key and value
    of `tags` (JSONB containment: `{"domain": "urban"}` finds the experiments tagged so,
    among other tags). At most `limit`, those after `after`."""
    filters = {"status": None if status is None else str(status), "name": name}
    return await select_rows(
        conn,
        Experiment,
        filters,
        order=("created_at", "experiment_id"),
        extra=None if tags is None else "tags @> %s::jsonb",
        extra_params=() if tags is None else (param("experiments", "tags", dict(tags)),),
        limit=limit,
        after=after,
    )


async def update_experiment(
    conn: Conn,
    experiment_id: str,
    *,
    name: str | None = None,
    description: str | None = None,
    hypothesis: str | None = None,
    folder_path: str | None = None,
    variables: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    results_summary: dict[str, Any] | None = None,
) -> Experiment:
    """Change the given fields; None leaves a field as it is.

    Text fields are replaced. JSONB fields are merged: their top-level keys overwrite the
    stored ones (PostgreSQL ``jsonb || jsonb``), other stored keys stay.
    """
    query = sql.SQL(
        "UPDATE experiments SET"
        " name = COALESCE(%(name)s, name),"
        " description = COALESCE(%(description)s, description),"
        " hypothesis = COALESCE(%(hypothesis)s, hypothesis),"
        " folder_path = COALESCE(%(folder_path)s, folder_path),"
        " variables = variables || COALESCE(%(variables)s::jsonb, '{{}}'),"
        " tags = tags || COALESCE(%(tags)s::jsonb, '{{}}'),"
        " metadata = metadata || COALESCE(%(metadata)s::jsonb, '{{}}'),"
        " results_summary = results_summary || COALESCE(%(results_summary)s::jsonb, '{{}}'),"
        " updated_at = now()"
        " WHERE experiment_id = %(experiment_id)s RETURNING {}"
    ).format(columns(Experiment))
    params = checked(
        "experiments", experiment_id=experiment_id, name=name, description=description,
        hypothesis=hypothesis, folder_path=folder_path, variables=variables, tags=tags,
        metadata=metadata, results_summary=results_summary,
    )  # fmt: skip
    row = await fetch_one(conn, Experiment, query, params)
    if row is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    return row


async def delete_experiment(
    conn: Conn, experiment_id: str, *, cascade: bool = False
) -> dict[str, int]:
    """Delete the experiment; rows deleted per table.

    `LifecycleError` naming how many simulations it still holds, unless `cascade=True`,
    which deletes them and all their data with it (`sim_schema.admin.delete_experiment`).
    """
    work = delete_experiment_work(experiment_id, cascade=cascade)
    result = await readiness.run_borrowed_async(conn, work, what="delete", schema=None)
    return cast(dict[str, int], result)


async def _transition(
    conn: Conn,
    experiment_id: str,
    action: str,
    results_summary: dict[str, Any] | None,
) -> Experiment:
    target, allowed = TRANSITIONS[action]
    query = sql.SQL(
        "UPDATE experiments SET status = %(target)s, updated_at = now(),"
        " completed_at = CASE WHEN %(terminal)s THEN now() END,"
        " results_summary = results_summary || COALESCE(%(results_summary)s::jsonb, '{{}}')"
        " WHERE experiment_id = %(experiment_id)s AND status = ANY(%(allowed)s)"
        " RETURNING {}"
    ).format(columns(Experiment))
    params = {
        "target": str(target),
        "terminal": target is not _S.RUNNING,
        **checked("experiments", results_summary=results_summary, experiment_id=experiment_id),
        "allowed": [str(s) for s in allowed],
    }
    row = await fetch_one(conn, Experiment, query, params)
    if row is not None:
        return row
    current = await find_experiment(conn, experiment_id)
    if current is None:
        raise NotFound(f"experiment {experiment_id!r} not found")
    raise LifecycleError(
        f"cannot {action} experiment {experiment_id!r}: it is {current.status.value!r}"
        f" (allowed from {', '.join(repr(s.value) for s in allowed)})"
    )


async def start_experiment(conn: Conn, experiment_id: str) -> Experiment:
    """``created -> running``."""
    return await _transition(conn, experiment_id, "start", None)


async def reopen_experiment(conn: Conn, experiment_id: str) -> Experiment:
    """``completed -> running``, to add runs to a finished experiment; clears completed_at."""
    return await _transition(conn, experiment_id, "reopen", None)


async def complete_experiment(
    conn: Conn, experiment_id: str, *, results_summary: dict[str, Any] | None = None
) -> Experiment:
    """``running -> completed``; sets completed_at, merges `results_summary`."""
    return await _transition(conn, experiment_id, "complete", results_summary)


async def fail_experiment(
    conn: Conn,
    experiment_id: str,
    *,
    error: str | None = None,
    results_summary: dict[str, Any] | None = None,
) -> Experiment:
    """``created|running -> failed``; `error` is merged into results_summary as ``"error"``."""
    summary = dict(results_summary or {})
    if error is not None:
        summary["error"] = error
    return await _transition(conn, experiment_id, "fail", summary or None)


async def abort_experiment(
    conn: Conn, experiment_id: str, *, results_summary: dict[str, Any] | None = None
) -> Experiment:
    """``created|running -> aborted``."""
    return await _transition(conn, experiment_id, "abort", results_summary)
