"""Safe loading of weight files: safetensors only, every header checked before a byte is used.

A pickle (or a torch.save zip, which holds one) can run any code when it is opened, so ddpmkit never unpickles a
model file: such a file is recognised by its first bytes and refused unread. A safetensors header is checked for
length, JSON, dtypes, shapes and offsets in bounded time and memory before the safetensors library reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import safetensors.torch as st
import torch
from safetensors import SafetensorError

from ddpmkit.errors import CheckpointError

MAX_HEADER_BYTES = 100 * 2**20  # a safetensors header longer than this is refused unread
_ITEMSIZE = {  # safetensors dtype -> bytes per element, for the dtypes torch can load
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E4M3FNUZ": 1, "F8_E5M2": 1, "F8_E5M2FNUZ": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
_MAX_RANK = 64
_PICKLE_HINT = "ddpmkit only loads safetensors because pickles can run code; convert it where you trust its source"


class CheckpointFileError(CheckpointError):
    """A checkpoint file that is missing, corrupt or unsafe; `file` names it and `problem` says what is wrong."""

    def __init__(self, file: Path, problem: str):
        super().__init__(f"{file}: {problem}")
        self.file, self.problem = Path(file), problem


def _os_reason(err: BaseException) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else " ".join(str(err).split())


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _pickle_kind(head: bytes) -> str | None:
    """What a file starting with `head` is, if it is a pickle in disguise."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive as written by torch.save, with a pickle inside"
    if head[:1] == b"\x80" and len(head) > 1 and 2 <= head[1] <= 5:
        return f"a pickle (protocol {head[1]}) as written by pickle.dump or an old torch.save"
    return None


def _check_tensor_entries(path: Path, header: dict, data_size: int) -> None:
    """Every tensor's dtype is known, its bytes lie in the data area, fit its shape and overlap no other's."""
    spans = []
    for key, spec in header.items():
        if key == "__metadata__":
            if not (isinstance(spec, dict) and all(isinstance(v, str) for v in spec.values())):
                raise CheckpointFileError(path, "bad safetensors header: __metadata__ must map str to str")
            continue
        spec = spec if isinstance(spec, dict) else {}
        dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
        if dtype not in _ITEMSIZE:
            raise CheckpointFileError(path, f"bad safetensors header: tensor {key!r} has unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and len(shape) <= _MAX_RANK and all(_is_int(d) and d >= 0 for d in shape)):
            raise CheckpointFileError(path, f"bad safetensors header: tensor {key!r} has a malformed shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise CheckpointFileError(path, f"bad safetensors header: tensor {key!r} has malformed data_offsets")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            problem = f"data_offsets {offsets} of tensor {key!r} lie outside the {data_size}-byte data area"
            raise CheckpointFileError(path, f"bad safetensors header: {problem} (truncated or corrupt)")
        expected = math.prod(shape) * _ITEMSIZE[dtype]
        if end - begin != expected:
            problem = f"tensor {key!r} has {end - begin} bytes, its shape {shape} of {dtype} needs {expected}"
            raise CheckpointFileError(path, f"bad safetensors header: {problem}")
        if end > begin:
            spans.append((begin, end, key))
    spans.sort()
    for (_, end0, key0), (begin1, _, key1) in zip(spans, spans[1:]):
        if begin1 < end0:
            raise CheckpointFileError(path, f"bad safetensors header: tensors {key0!r} and {key1!r} overlap")


def _check_safetensors(path: Path) -> None:
    """Refuse anything that is not a well-formed safetensors file, reading at most 8 + MAX_HEADER_BYTES bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        kind = _pickle_kind(head)
        if kind:
            raise CheckpointFileError(path, f"this is a pickle/torch.save file ({kind}); {_PICKLE_HINT}")
        if len(head) < 8:
            raise CheckpointFileError(path, f"not a safetensors file: only {size} bytes")
        length = int.from_bytes(head, "little")
        if length > MAX_HEADER_BYTES:
            raise CheckpointFileError(path, f"not a safetensors file: header length {length} is over the limit")
        if length > size - 8:
            problem = f"header length {length} runs past the end of the {size}-byte file"
            raise CheckpointFileError(path, f"not a safetensors file: {problem} (truncated or corrupt)")
        raw = f.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        raise CheckpointFileError(path, "not a safetensors file: its header is not JSON (corrupt)") from err
    if not isinstance(header, dict):
        raise CheckpointFileError(path, "not a safetensors file: its header is not a JSON object")
    _check_tensor_entries(path, header, size - 8 - length)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed in 1 MiB chunks (weights files name their extractor in cache keys by it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_weights_file(path: Path, *, map_location: str | int | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Validate and load one safetensors file (a state_dict); pickles and malformed files raise CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileError(path, "no such file")
    _check_safetensors(path)
    device = str(map_location) if isinstance(map_location, torch.device) else map_location
    try:
        return st.load_file(path, device=device)
    except (SafetensorError, OSError) as err:
        raise CheckpointFileError(path, f"cannot be read as safetensors ({_os_reason(err)})") from err


def _shape(shape: Any) -> str:
    return "(" + ",".join(str(d) for d in shape) + ")"


def _kind(tensor: torch.Tensor) -> str:
    return "complex" if tensor.is_complex() else "float" if tensor.is_floating_point() else "int"


def check_weights_fit(model: torch.nn.Module, weights: dict, source: str) -> None:
    """Raise CheckpointError if `weights` (from `source`) has missing/unexpected keys, wrong shapes, or integer
    tensors where `model` has floats (or the reverse) for `model`."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and tuple(expected[k].shape) != tuple(weights[k].shape)]
    # integers where floats belong (or the reverse) are refused; float16 for float32 is a cast, as load_state_dict does
    kinds = [k for k in expected if k in weights and _kind(expected[k]) != _kind(weights[k])]
    problems = []
    for keys, what in ((missing, "missing"), (unexpected, "unexpected")):
        if keys:
            more = ", ..." if len(keys) > 3 else ""
            noun = "key" if len(keys) == 1 else "keys"
            problems.append(f"{len(keys)} {what} {noun} ({', '.join(keys[:3])}{more})")
    for k in wrong[:3]:
        problems.append(f"shape of {k} is {_shape(expected[k].shape)} here, {_shape(weights[k].shape)} in the file")
    if len(wrong) > 3:
        problems.append(f"{len(wrong) - 3} more shape mismatches")
    for k in kinds[:3]:
        problems.append(f"dtype of {k} is {str(expected[k].dtype).removeprefix('torch.')} here, "
                        f"{str(weights[k].dtype).removeprefix('torch.')} in the file")
    if len(kinds) > 3:
        problems.append(f"{len(kinds) - 3} more dtype mismatches")
    if problems:
        raise CheckpointError(
            f"{source} does not fit the model: {'; '.join(problems)} (saved from a different model config?)"
        )
