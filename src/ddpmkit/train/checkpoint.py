"""Moved to `ddpmkit.store.checkpoint`; this name stays so that older imports keep working (a shim, no code)."""

from ddpmkit.store.checkpoint import *  # noqa: F401,F403
from ddpmkit.store.checkpoint import (  # noqa: F401  (private names that tests and older callers use)
    CONFIG_JSON, FORMAT, FORMAT_VERSION, MANIFEST, STATE_JSON, STATE_TENSORS, Checkpoint, CheckpointFileError,
    _check_safetensors, _flatten, _read_json, _unflatten, check_weights_fit, latest_valid_checkpoint,
    list_checkpoints, load_checkpoint, load_weights_file, save_checkpoint, st,
)
