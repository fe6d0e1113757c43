"""Async data access, one module per entity; every function takes a connection first.

Get the connection from `Store.connection()` (autocommit, search_path = the module's
schema). Results come back as the pydantic records of `sim_schema.models`; missing keys
raise `NotFound`, forbidden status changes `LifecycleError`, CHECK violations
`ValidationError`, taken ids `AlreadyExists`; a database without the module's schema (or
behind the code) `SchemaNotReady`.

Every `list_*` function returns its rows in a stated total order and pages by keyset:
`limit=` caps the rows, `after=` (the last row of the previous page, or a mapping of its
order columns) starts after it. A page costs the same wherever it is in the listing.
The event queue for worker pools is `claim_events` / `mark_event_processed(worker=)` /
`fail_event` / `release_event` (docs/operations.md, "The event queue").
"""

from .agent_states import (
    get_agent_state,
    latest_agent_state,
    list_agent_actions,
    list_agent_states,
    record_agent_action,
    save_agent_state,
)
from .agents import (
    find_agent,
    get_agent,
    list_agents,
    record_agent_death,
    record_agent_deaths,
    register_agent,
    register_agents,
)
from .decisions import add_decision_feedback, get_decision, list_decisions, record_decision
from .environment import (
    get_environment_state,
    latest_environment_state,
    list_environment_states,
    save_environment_state,
)
from .events import (
    DEFAULT_MAX_ATTEMPTS,
    claim_events,
    create_event,
    extend_lease,
    fail_event,
    get_event,
    list_agent_events,
    list_events,
    list_unprocessed_events,
    mark_event_processed,
    release_event,
    requeue_event,
)
from .experiments import (
    abort_experiment,
    complete_experiment,
    create_experiment,
    delete_experiment,
    fail_experiment,
    find_experiment,
    get_experiment,
    get_or_create_experiment,
    list_experiments,
    start_experiment,
    update_experiment,
)
from .simulations import (
    abort_simulation,
    complete_simulation,
    create_simulation,
    delete_simulation,
    fail_simulation,
    find_simulation,
    get_simulation,
    get_simulation_config,
    list_simulation_configs,
    list_simulations,
    pause_simulation,
    resume_simulation,
    save_simulation_config,
    start_simulation,
    update_simulation,
)
from .steps import (
    get_step_metrics,
    list_health_incidents,
    list_interactions,
    list_learning_experiences,
    list_resource_states,
    list_step_metrics,
    record_health_incident,
    record_interaction,
    record_learning_experience,
    save_resource_state,
    save_step_metrics,
)

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "abort_experiment",
    "abort_simulation",
    "add_decision_feedback",
    "claim_events",
    "complete_experiment",
    "complete_simulation",
    "create_event",
    "create_experiment",
    "create_simulation",
    "delete_experiment",
    "delete_simulation",
    "extend_lease",
    "fail_event",
    "fail_experiment",
    "fail_simulation",
    "find_agent",
    "find_experiment",
    "find_simulation",
    "get_agent",
    "get_agent_state",
    "get_decision",
    "get_environment_state",
    "get_event",
    "get_experiment",
    "get_or_create_experiment",
    "get_simulation",
    "get_simulation_config",
    "get_step_metrics",
    "latest_agent_state",
    "latest_environment_state",
    "list_agent_actions",
    "list_agent_events",
    "list_agent_states",
    "list_agents",
    "list_decisions",
    "list_environment_states",
    "list_events",
    "list_experiments",
    "list_health_incidents",
    "list_interactions",
    "list_learning_experiences",
    "list_resource_states",
    "list_simulation_configs",
    "list_simulations",
    "list_step_metrics",
    "list_unprocessed_events",
    "mark_event_processed",
    "pause_simulation",
    "record_agent_action",
    "record_agent_death",
    "record_agent_deaths",
    "record_decision",
    "record_health_incident",
    "record_interaction",
    "record_learning_experience",
    "register_agent",
    "register_agents",
    "release_event",
    "requeue_event",
    "resume_simulation",
    "save_agent_state",
    "save_environment_state",
    "save_resource_state",
    "save_simulation_config",
    "save_step_metrics",
    "start_experiment",
    "start_simulation",
    "update_experiment",
    "update_simulation",
]
