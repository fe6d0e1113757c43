"""Compatibility facades for code written against the predecessor systems.

`sim_schema.compat.onesim` (and `onesim_async`) give OneSim's data managers, and
`sim_schema.compat.farm` the AgentFarm experiment layer, with their call names and
shapes: change the import and the code runs here (docs/coming-from.md). Each call
delegates to this module's own API; nothing is stored twice or differently.

The synchronous facades run that API on an event loop of their own, in a background
thread, with one connection pool per database (`Settings`): `close()` closes them (it is
also done at interpreter exit).
"""

from ._runner import close

__all__ = ["close"]
