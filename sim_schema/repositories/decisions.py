"""Agent decisions (LLM prompts, outputs, actions) and the feedback added to them later."""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from ..errors import AlreadyExists, NotFound
from ..models import AgentDecision, AgentDecisionCreate
from ..paging import Cursor
from ._sql import Conn, columns, fetch_one, insert_sql, row_values, select_rows

_NAMES = tuple(AgentDecisionCreate.model_fields)
DECISION_ORDER = ("step", "created_at", "decision_id")
_INSERT = insert_sql(
    AgentDecisionCreate,
    _NAMES,
    returning=AgentDecision,
    on_conflict=sql.SQL("ON CONFLICT (simulation_id, decision_id) DO NOTHING"),
)


async def record_decision(conn: Conn, decision: AgentDecisionCreate) -> AgentDecision:
    """Insert a decision (its `decision_id` is the client's).

    `NotFound` names the missing simulation, agent or event; `AlreadyExists` if the id is
    taken.
    """
    row = await fetch_one(conn, AgentDecision, _INSERT, row_values(decision, _NAMES))
    if row is None:
        raise AlreadyExists(
            f"decision {decision.decision_id} of simulation {decision.simulation_id!r}"
            " already exists"
        )
    return row


async def get_decision(conn: Conn, simulation_id: str, decision_id: UUID) -> AgentDecision:
    """The decision; `NotFound` if the simulation has no decision with this id."""
    rows = await select_rows(
        conn,
        AgentDecision,
        {"simulation_id": simulation_id, "decision_id": decision_id},
        order=("decision_id",),
    )
    if not rows:
        raise NotFound(f"decision {decision_id} of simulation {simulation_id!r} not found")
    return rows[0]


async def add_decision_feedback(
    conn: Conn,
    simulation_id: str,
    decision_id: UUID,
    *,
    feedback: str | None = None,
    rating: float | None = None,
    reason: str | None = None,
) -> AgentDecision:
    """Set the given feedback fields (None keeps a stored value) and feedback_at = now()."""
    query = sql.SQL(
        "UPDATE agent_decisions SET feedback = COALESCE(%s, feedback),"
        " rating = COALESCE(%s, rating), reason = COALESCE(%s, reason), feedback_at = now()"
        " WHERE simulation_id = %s AND decision_id = %s RETURNING {}"
    ).format(columns(AgentDecision))
    params = (feedback, rating, reason, simulation_id, decision_id)
    row = await fetch_one(conn, AgentDecision, query, params)
    if row is None:
        raise NotFound(f"decision {decision_id} of simulation {simulation_id!r} not found")
    return row


async def list_decisions(
    conn: Conn,
    simulation_id: str,
    *,
    agent_id: str | None = None,
    event_id: UUID | None = None,
    start_step: int | None = None,
    end_step: int | None = None,
    with_feedback: bool | None = None,
    limit: int | None = None,
    after: Cursor | None = None,
) -> list[AgentDecision]:
    """Decisions in (step, created_at, decision_id) order, of one agent and/or made for
    one event if given; `with_feedback` True: only those that got feedback
    (`add_decision_feedback`), False: only those that did not. At most `limit`, those
    after `after` (the last decision of the previous page)."""
    feedback = {None: None, True: "feedback_at IS NOT NULL", False: "feedback_at IS NULL"}
    return await select_rows(
        conn,
        AgentDecision,
        {"simulation_id": simulation_id, "agent_id": agent_id, "event_id": event_id},
        order=DECISION_ORDER,
        start_step=start_step,
        end_step=end_step,
        extra=feedback[with_feedback],
        limit=limit,
        after=after,
    )
