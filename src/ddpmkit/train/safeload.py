"""Moved to `ddpmkit.store.safeload`; this name stays so that older imports keep working (a shim, no code)."""

from ddpmkit.store.safeload import (  # noqa: F401
    MAX_HEADER_BYTES, CheckpointFileError, _check_safetensors, _is_int, _os_reason, _pickle_kind, check_weights_fit,
    file_sha256, load_weights_file,
)
