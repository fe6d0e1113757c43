"""A deterministic simulation that logs through the public logger, for the crash tests:
`python crash_child.py DSN SIMULATION_ID START STEPS`. Every row depends only on its step
and agent, so a run resumed at any step logs exactly what an uninterrupted run logs. It
prints `step N` once step N's rows are logged (accepted by the logger, not yet committed).
"""

from __future__ import annotations

import asyncio
import sys
import time

from sim_schema import Settings, SimulationLogger, Store, repositories

AGENTS = 60


async def run(dsn: str, simulation_id: str, start: int, steps: int) -> None:
    async with Store(Settings(dsn=dsn)) as store:
        async with store.connection() as conn:
            if await repositories.find_simulation(conn, simulation_id) is None:
                await repositories.create_simulation(conn, simulation_id)
        async with SimulationLogger(store, simulation_id) as log:
            await log.log_agents(
                [{"agent_id": f"a{i}", "agent_type": ("prey", "predator")[i % 2]}
                 for i in range(AGENTS)]
            )  # registered again on a resume: a no-op
            for step in range(start, steps):
                await log.log_agent_states(
                    [{"step": step, "agent_id": f"a{i}", "health": (step * 7 + i) % 100 / 100,
                      "age": step, "extras": {"seen": [step, i]}} for i in range(AGENTS)]
                )
                for i in range(AGENTS):
                    for kind in ("move", "eat")[: 1 + (step + i) % 2]:
                        await log.log_action(step, f"a{i}", kind, reward=(step + i) % 5 / 4)
                    if (step + i) % 9 == 0:
                        await log.log_health_incident(step, f"a{i}", "hit", health_before=1.0,
                                                      health_after=0.5)
                await log.log_resource_state(step, step % 3, amount=float(step))
                await log.log_step(step, total_agents=AGENTS, births=0, deaths=0)
                await log.log_event(step, "tick", payload={"step": step})
                print("step", step, flush=True)
                time.sleep(0.004)  # the model's own work between steps


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
