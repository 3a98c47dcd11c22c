"""Crash-proof, safe checkpoints: safetensors for tensors, JSON for the rest, a SHA-256 manifest, atomic renames.

On disk, one folder per checkpoint, named by the training step (9 digits, zero-padded):

    ckpt_dir/step_000000400/
        model.safetensors   ema.safetensors   one file per entry of `weights` (a state_dict each)
        state.safetensors   every tensor of `state` (optimizer moments, RNG states), under path-like keys
        state.json          the rest of `state`, with {"$tensor": key} placeholders for those tensors
        config.json         the resolved run config (optional)
        manifest.json       written last: step, format version, size and SHA-256 of every file above

Saving writes into `ckpt_dir/.tmp-step_000000400-<pid>`, fsyncs every file, writes and fsyncs the manifest, fsyncs
the folder, renames it to `step_000000400` (one atomic rename) and fsyncs `ckpt_dir`. A SIGKILL at any moment
therefore leaves either the old set of checkpoints or the old set plus one complete new one; leftovers are named
`.tmp-*` / `.trash-*`, never `step_*`, and the next save removes them. The kill points are in `faults.py`.

Loading trusts no byte: the manifest must parse, every file must have its listed size and SHA-256, and every
safetensors header is checked (length, JSON, dtypes, offsets) before the safetensors library reads it. Pickles are
refused without being opened: ddpmkit never unpickles a file, because unpickling can run any code.

The encoding of `state` in state.json: JSON scalars, lists and string-keyed dicts as they are; markers for the rest:
{"$tensor": key}, {"$ndarray": key, "dtype": "<u4", "shape": [624]} (raw bytes in state.safetensors),
{"$tuple": [...]}, {"$dict": [[key, value], ...]} (int/float/bool/None keys, or str keys starting with "$").
Numpy scalars come back as Python numbers, namedtuples as tuples, OrderedDicts as dicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch as st
import torch
from safetensors import SafetensorError

from ddpmkit.errors import CheckpointError
from ddpmkit.store.faults import fault_point
from ddpmkit.store.safeload import (  # noqa: F401  (re-exported: one import for callers)
    CheckpointFileError, _check_safetensors, _is_int, _os_reason, check_weights_fit, load_weights_file,
)

FORMAT = "ddpmkit-checkpoint"
FORMAT_VERSION = 1
MANIFEST, STATE_JSON, STATE_TENSORS, CONFIG_JSON = "manifest.json", "state.json", "state.safetensors", "config.json"
MAX_JSON_BYTES = 256 * 2**20  # manifest.json, state.json, config.json
_CHUNK = 2**20
_STEP_DIR = re.compile(r"step_(\d{9,})")
_WEIGHTS_NAME = re.compile(r"[A-Za-z0-9_-]+")
_FILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Checkpoint:
    """A verified checkpoint: `weights[name]` is a state_dict, `state` the structure given to `save_checkpoint`."""

    path: Path
    step: int
    weights: dict[str, dict[str, torch.Tensor]]
    state: Any
    config: dict | None


# ---------------------------------------------------------------- state <-> (JSON skeleton, flat tensors)


def _put(tensors: dict[str, torch.Tensor], path: str, tensor: torch.Tensor) -> str:
    key = path.lstrip("/") or "root"
    while key in tensors:  # a str dict key holding "/" can spell another entry's path
        key = f"{path.lstrip('/')}#{len(tensors)}"
    tensors[key] = tensor
    return key


def _flatten(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able skeleton of `obj`; its tensors and numpy arrays go into `tensors` under path-like keys."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return {"$tensor": _put(tensors, path, obj)}
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biufc":
            raise TypeError(f"cannot checkpoint the {obj.dtype} numpy array at state{path}: only numeric arrays")
        raw = torch.from_numpy(np.ascontiguousarray(obj).reshape(-1).view(np.uint8).copy())
        return {"$ndarray": _put(tensors, path, raw), "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, tuple):
        return {"$tuple": [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_flatten(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        items = [(k, _flatten(v, f"{path}/{k}", tensors)) for k, v in obj.items()]
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return dict(items)
        bad = [k for k in obj if k is not None and not isinstance(k, (bool, int, float, str))]
        if bad:
            raise TypeError(f"cannot checkpoint the dict key {bad[0]!r} at state{path}: keys must be str/int/float")
        return {"$dict": [[k, v] for k, v in items]}
    raise TypeError(
        f"cannot checkpoint a {type(obj).__name__} at state{path}: "
        "use dicts, lists, tuples, numbers, strings, tensors or numpy arrays"
    )


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of `_flatten`. Malformed input raises KeyError/TypeError/ValueError."""
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "$tensor" in obj:
        return tensors[obj["$tensor"]]
    if "$ndarray" in obj:
        dtype = np.dtype(obj["dtype"])
        if dtype.kind not in "biufc":
            raise ValueError(f"numpy dtype {dtype} is not numeric")
        return tensors[obj["$ndarray"]].numpy().view(dtype).reshape(obj["shape"]).copy()
    if "$tuple" in obj:
        return tuple(_unflatten(v, tensors) for v in obj["$tuple"])
    if "$dict" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["$dict"]}
    return {k: _unflatten(v, tensors) for k, v in obj.items()}


# ---------------------------------------------------------------- saving


def _cpu_tensors(tensors: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Detached contiguous CPU tensors that each own their storage (safetensors refuses shared memory)."""
    out, seen = {}, set()
    for key, t in tensors.items():
        if not isinstance(key, str) or not isinstance(t, torch.Tensor):
            raise TypeError(f"{what}[{key!r}] must map a str to a tensor, got {type(t).__name__}")
        t = t.detach().to("cpu")
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        if not whole or storage.data_ptr() in seen:  # a view or an alias: give it its own copy
            t = t.clone(memory_format=torch.contiguous_format)
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _write_json(path: Path, obj: Any, *, indent: int | None = None, fsync: bool = False) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def _digest(path: Path, *, fsync: bool = False) -> tuple[int, str]:
    """Size and SHA-256 of a file, streamed in chunks; with `fsync`, also flush it to the disk."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        if fsync:
            os.fsync(f.fileno())
    return size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_files(tmp: Path, weights: dict, state: Any, config: dict | None) -> dict[str, dict]:
    """Write every data file into `tmp`, fsync them, return their manifest entries."""
    state_tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(state, "", state_tensors)
    names = []
    for name, state_dict in weights.items():
        st.save_file(_cpu_tensors(state_dict, f"weights[{name!r}]"), tmp / f"{name}.safetensors")
        names.append(f"{name}.safetensors")
        fault_point("save:weights")
    st.save_file(_cpu_tensors(state_tensors, "state"), tmp / STATE_TENSORS)
    _write_json(tmp / STATE_JSON, {"format": "ddpmkit-state", "version": FORMAT_VERSION, "state": skeleton})
    names += [STATE_TENSORS, STATE_JSON]
    if config is not None:
        _write_json(tmp / CONFIG_JSON, config, indent=2)
        names.append(CONFIG_JSON)
    fault_point("save:before_fsync")
    files = {}
    for name in names:
        size, sha256 = _digest(tmp / name, fsync=True)
        files[name] = {"size": size, "sha256": sha256}
    fault_point("save:before_manifest")
    return files


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename `tmp` to `final` atomically; an existing `final` goes to .trash first and is deleted after."""
    old = final.with_name(f".trash-{final.name}-{os.getpid()}") if final.exists() else None
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)  # a leftover of this same pid; missing is fine
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old is not None:
            os.replace(old, final)
        raise
    _fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old)


def _prune(ckpt_dir: Path, final: Path, keep: int) -> None:
    """Remove leftovers of crashed saves, then all but the newest `keep` checkpoints (always keeping `final`)."""
    for entry in ckpt_dir.iterdir():
        if entry.name.startswith((".tmp-", ".trash-")):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    others = [p for p in list_checkpoints(ckpt_dir) if p != final]
    for old in others[: max(len(others) - (keep - 1), 0)]:
        trash = ckpt_dir / f".trash-{old.name}-{os.getpid()}"
        os.replace(old, trash)  # from here on it no longer looks like a checkpoint
        fault_point("save:prune")
        shutil.rmtree(trash)
    _fsync_dir(ckpt_dir)


def save_checkpoint(
    ckpt_dir: Path,
    step: int,
    *,
    weights: dict[str, dict[str, torch.Tensor]],
    state: dict,
    config: dict | None = None,
    keep: int = 3,
) -> Path:
    """Write checkpoint `step` into `ckpt_dir/step_XXXXXXXXX` so that a crash at any moment is harmless.

    Returns the checkpoint's folder. Keeps the newest `keep` checkpoints by step (always the new one) and removes
    the rest and any leftovers of crashed saves. An OS failure (disk full, read-only) raises CheckpointError and
    leaves the earlier checkpoints as they were.
    """
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    bad = [n for n in weights if not isinstance(n, str) or not _WEIGHTS_NAME.fullmatch(n) or n == "state"]
    if bad:
        raise ValueError(f"weights name {bad[0]!r} must be letters, digits, '_' or '-', and not 'state'")
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step_{step:09d}"
    tmp = ckpt_dir / f".tmp-{final.name}-{os.getpid()}"
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of this same pid; missing is fine
        tmp.mkdir()
        files = _write_files(tmp, weights, state, config)
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, "step": step, "weights": list(weights)}
        _write_json(tmp / MANIFEST, {**manifest, "files": files}, indent=2, fsync=True)
        _fsync_dir(tmp)
        fault_point("save:before_rename")
        _put_in_place(tmp, final)
    except (OSError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)  # best effort; the error below is what matters
        raise CheckpointError(
            f"cannot save checkpoint {final}: {_os_reason(err)}; earlier checkpoints are untouched "
            f"(free disk space or make {ckpt_dir} writable)"
        ) from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fault_point("save:after_rename")
    try:
        _prune(ckpt_dir, final, keep)
    except OSError as err:
        raise CheckpointError(f"saved {final}, but cannot remove old checkpoints: {_os_reason(err)}") from err
    return final


# ---------------------------------------------------------------- verifying and loading


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointFileError(path, f"larger than {MAX_JSON_BYTES} bytes, refusing to parse it")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        raise CheckpointFileError(path, f"not valid JSON ({type(err).__name__})") from err


def _check_manifest(manifest: Any, path: Path) -> None:
    """Check the manifest's schema; CheckpointFileError names what is malformed."""
    mpath = path / MANIFEST

    def need(ok: bool, problem: str) -> None:
        if not ok:
            raise CheckpointFileError(mpath, problem)

    need(isinstance(manifest, dict) and manifest.get("format") == FORMAT, f"not a {FORMAT} manifest")
    version = manifest.get("version")
    need(_is_int(version), "malformed (no format version)")
    need(version <= FORMAT_VERSION, f"format version {version} is newer than this ddpmkit reads; upgrade ddpmkit")
    need(_is_int(manifest.get("step")) and manifest["step"] >= 0, "malformed (no step)")
    match = _STEP_DIR.fullmatch(path.name)
    need(not match or int(match.group(1)) == manifest["step"], f"says step {manifest['step']}, not that of {path.name}")
    files, names = manifest.get("files"), manifest.get("weights")
    need(isinstance(files, dict) and isinstance(names, list), "malformed (no file list)")
    for name, entry in files.items():
        need(bool(_FILE_NAME.fullmatch(name)), f"malformed (bad file name {name!r})")
        ok = isinstance(entry, dict) and _is_int(entry.get("size")) and isinstance(entry.get("sha256"), str)
        need(ok and bool(_SHA256.fullmatch(entry["sha256"])), f"malformed (bad entry for {name})")
    need(all(isinstance(n, str) and _WEIGHTS_NAME.fullmatch(n) for n in names), "malformed (bad weights names)")
    for name in [STATE_JSON, STATE_TENSORS] + [f"{n}.safetensors" for n in names]:
        need(name in files, f"does not list {name}, which a checkpoint needs")


def _verify(path: Path) -> dict:
    """Return the manifest of checkpoint `path` after checking every file's size and SHA-256 against it."""
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a checkpoint folder (expected step_XXXXXXXXX holding manifest.json)")
    if not (path / MANIFEST).is_file():
        raise CheckpointFileError(path / MANIFEST, "missing (the save did not finish, or files were removed)")
    manifest = _read_json(path / MANIFEST)
    _check_manifest(manifest, path)
    for name, entry in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointFileError(file, "missing (listed in manifest.json)")
        size = file.stat().st_size
        if size != entry["size"]:
            raise CheckpointFileError(file, f"{size} bytes, manifest.json says {entry['size']} (truncated or changed)")
        if _digest(file)[1] != entry["sha256"]:
            raise CheckpointFileError(file, "SHA-256 mismatch (file corrupt or changed)")
    return manifest


def _load_state(path: Path) -> Any:
    tensors = load_weights_file(path / STATE_TENSORS)
    doc = _read_json(path / STATE_JSON)
    try:
        if doc.get("format") != "ddpmkit-state":
            raise ValueError("not a ddpmkit state document")
        return _unflatten(doc["state"], tensors)
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        problem = f"malformed ({type(err).__name__}: {err})"
        raise CheckpointFileError(path / STATE_JSON, " ".join(problem.split())) from err


def load_checkpoint(path: Path, *, map_location: str | int | torch.device = "cpu") -> Checkpoint:
    """Verify checkpoint folder `path` against its manifest, then load it.

    `map_location` applies to the weights; state tensors stay on the CPU (RNG states must, and
    `optimizer.load_state_dict` moves its tensors to the parameters' device).
    """
    path = Path(path)
    manifest = _verify(path)
    weights = {n: load_weights_file(path / f"{n}.safetensors", map_location=map_location) for n in manifest["weights"]}
    state = _load_state(path)
    config = _read_json(path / CONFIG_JSON) if CONFIG_JSON in manifest["files"] else None
    return Checkpoint(path=path, step=manifest["step"], weights=weights, state=state, config=config)


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """The `step_XXXXXXXXX` folders in `ckpt_dir` (a save in progress or crashed is never one), by step."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = []
    for entry in ckpt_dir.iterdir():
        match = _STEP_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return [p for _, p in sorted(found)]


def latest_valid_checkpoint(
    ckpt_dir: Path, *, map_location: str | int | torch.device = "cpu"
) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies and loads (None if none), and a one-line warning per one skipped."""
    warnings: list[str] = []
    candidates = list_checkpoints(ckpt_dir)[::-1]
    for i, path in enumerate(candidates):
        try:
            return load_checkpoint(path, map_location=map_location), warnings
        except CheckpointError as err:
            what = f"{err.file.name}: {err.problem}" if isinstance(err, CheckpointFileError) else str(err)
            then = f"falling back to {candidates[i + 1].name}" if i + 1 < len(candidates) else "no older one left"
            warnings.append(f"skipping {path.name}: {what}; {then}")
    return None, warnings


