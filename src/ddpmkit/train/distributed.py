"""Moved to ddpmkit.distributed (shared with the sampling and evaluation jobs); this old path re-exports it."""

from ..distributed import (DistInfo, all_sum, any_true, barrier, broadcast_object, cleanup, gather,  # noqa: F401
                           pick_device, setup, shared_token)
