"""Moved to `ddpmkit.store.faults`; this name stays so that older imports keep working (a shim, no code).

The counter `_hits` is the same object as the store's, so clearing it here clears it there.
"""

from ddpmkit.store.faults import ENV_VAR, _hits, fault_armed, fault_point  # noqa: F401
