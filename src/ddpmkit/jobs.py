"""Long jobs that many processes share: 50,000 samples for FID, the test-set bound. One layer, used by both
`ddpm sample` and `ddpm eval`.

A job computes arrays for the images 0 .. n-1 (`work(indices) -> {name: array with one row per image}`):

- The same result however it is split. Image i's noise depends only on (seed, i) (ddpmkit.noise), and class
  labels are drawn for all n images up front (label i depends only on (seed, i)), so 1 or K processes, any
  batch size and any number of resumptions give the same rows, bit for bit where the network's arithmetic does
  not depend on the batch (the CPU here: tested).
- Across processes. Under torchrun each rank takes every K-th batch of the images still to do; after each round of
  batches one small all-reduce counts the images done, for the one progress bar that rank 0 shows (images/s, ETA).
  Rank 0 then reads every shard back and returns the whole result; the other ranks return None. The shard folder
  must be one that every rank sees (a local disk for one machine, a shared file system for several).
- Resumable. Each finished batch is written atomically as a shard `START-STOP.npz` (uncompressed) in the job's
  folder `RESULT.shards/KEY16/`, holding the rows, the job's key and a SHA-256 digest of both. The same command
  again reads the shards that verify and computes only the rest, in batches of its own size; a kill (SIGKILL
  included) loses at most the batch each rank was computing.
- Never mixed. The job key is the SHA-256 of the job's identity: everything the rows depend on (the checkpoint's
  manifest, which weights, sampler settings, seed, n, labels, guidance, the feature network's weights, the noise
  rule, the device type), never the batch size or the number of processes. A shard whose bytes do not verify
  (truncated, altered) or whose key differs (another run, checkpoint, sampler or seed) is reported, removed and
  redone, never read.
- The caller writes the final file atomically and then calls `remove_shards`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .data import from_model_range
from .errors import UserError
from .fileio import atomic_path
from .noise import RULE, ImageNoise
from .store.faults import fault_point
from .distributed import DistInfo, all_sum, barrier, broadcast_object

SHARDS = ".shards"
_SHARD_NAME = re.compile(r"(\d{9})-(\d{9})\.npz")
_KEY, _DIGEST = "__key__", "__digest__"


def job_key(identity: dict) -> str:
    """SHA-256 (hex) of the job's identity as canonical JSON."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def shard_root(result: str | Path) -> Path:
    """Where the shards of the jobs whose result is `result` live: RESULT.shards/ beside it."""
    result = Path(result)
    return result.with_name(result.name + SHARDS)


@dataclass
class Job:
    """n images, an identity (what the rows depend on) and `work(indices) -> {name: (len(indices), ...) array}`."""

    name: str
    n: int
    identity: dict
    work: Callable[[np.ndarray], dict]
    batch_size: int = 256
    root: Path | None = None  # RESULT.shards; None: in memory, one process, not resumable
    progress: bool = False

    @property
    def key(self) -> str:
        return job_key({"name": self.name, "n": self.n, **self.identity})

    @property
    def folder(self) -> Path | None:
        return None if self.root is None else Path(self.root) / self.key[:16]


def run_job(job: Job, info: DistInfo | None = None) -> dict | None:
    """Every row of the job (rank 0; None on the other ranks), from its verified shards and the work still to do."""
    info = info or DistInfo()
    if job.n < 1 or job.batch_size < 1:
        raise ValueError(f"job {job.name}: n = {job.n} and batch_size = {job.batch_size} must be at least 1")
    if job.folder is None:
        if info.active:
            raise ValueError("a job split over processes needs a shard folder (Job.root)")
        return _run_in_memory(job)
    done = broadcast_object(info, _scan(job) if info.is_main else None)
    batches = _plan(done, job.n, job.batch_size)
    rounds = -(-len(batches) // info.world_size)
    desc = job.name + (f" ({info.world_size} processes)" if info.active else "")
    with tqdm(total=job.n, initial=job.n - sum(b - a for a, b in batches), unit="img", desc=desc,
              disable=not (job.progress and info.is_main), dynamic_ncols=True) as bar:
        for r in range(rounds):
            k = r * info.world_size + info.rank
            count = 0
            if k < len(batches):
                start, stop = batches[k]
                write_shard(job, start, stop, job.work(np.arange(start, stop)))
                fault_point("jobs:shard")  # tests: a kill right after a shard is in place
                count = stop - start
            bar.update(all_sum(info, count))
    barrier(info)
    return _collect(job) if info.is_main else None


def remove_shards(job: Job) -> None:
    """Remove the job's shard folder (after its result is written), and RESULT.shards if that leaves it empty."""
    if job.folder is None:
        return
    shutil.rmtree(job.folder, ignore_errors=True)
    (job.folder.parent / f"{job.folder.name}.json").unlink(missing_ok=True)
    try:
        Path(job.root).rmdir()
    except OSError:
        pass  # other jobs' shards are still there, or it is gone already


def _run_in_memory(job: Job) -> dict:
    parts = []
    with tqdm(total=job.n, unit="img", desc=job.name, disable=not job.progress, dynamic_ncols=True) as bar:
        for start in range(0, job.n, job.batch_size):
            stop = min(start + job.batch_size, job.n)
            parts.append(_checked(job, start, stop, job.work(np.arange(start, stop))))
            bar.update(stop - start)
    return _join(parts)


# ------------------------------------------------------------------------------------------------ sampling


def model_identity(pipe) -> dict:
    """What a pipeline's outputs depend on: the checkpoint's manifest (SHA-256 of every file in it; which weights,
    EMA or training, the caller adds), the device type (CPU and GPU arithmetic differ in the last bits), the schedule's T."""
    manifest = Path(pipe.checkpoint) / "manifest.json"
    sha = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else str(pipe.checkpoint)
    device = next(iter(pipe.model.parameters())).device.type
    precision = getattr(pipe.precision, "name", "fp32")  # bf16 and fp32 networks give different images
    return {"checkpoint_manifest_sha256": sha, "step": pipe.step, "device": device, "T": pipe.diffusion.num_timesteps,
            "precision": precision}


def sample_job(pipe, n: int, *, seed: int = 0, sampler: str | None = None, steps: int | None = None,
               eta: float | None = None, spacing: str | None = None, labels: np.ndarray | None = None,
               guidance: float | None = None, batch_size: int = 256, root: Path | None = None,
               progress: bool = False, features=None, ema: bool = True) -> Job:
    """The job of drawing n images from `pipe`: rows "images" uint8 (n, H, W, C), "labels" (a conditional run: the
    int64 labels given, or drawn for all n in the data's proportions with `seed`), and with `features` (an
    extractor: images -> {name: array}) its outputs too. Image i starts from and draws noise of (seed, i) only."""
    sampler, steps, eta, spacing = pipe.sampler_settings(sampler, steps, eta, spacing)
    if pipe.classes is not None and labels is None:
        labels = pipe.labels(n, None, seed)
    w = float(guidance or 0.0) if labels is not None else None
    identity = {**model_identity(pipe), "ema": ema, "sampler": sampler, "steps": steps, "eta": eta,
                "spacing": spacing, "seed": seed, "noise": RULE, "guidance": w, "clip_denoised": True,
                "labels_sha256": None if labels is None else hashlib.sha256(
                    np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest(),
                "features": None if features is None else f"{features.name}|{features.weights_sha256}"}

    def work(index: np.ndarray) -> dict:
        shape = (len(index), pipe.channels, pipe.image_size, pipe.image_size)
        # the network under the pipeline's precision (bf16 autocast where chosen; guidance's mix stays fp32)
        model = pipe.network if labels is None else pipe.guided(labels[index], w).network
        x = pipe.diffusion.sample(model, shape, sampler=sampler, steps=steps, eta=eta, spacing=spacing,
                                  generator=ImageNoise(seed, index))
        # a fresh copy: the permuted tensor's strides (also for C = 1) would send the feature network down another
        # kernel path than the same images read from an .npz, and its features would differ in the last bits
        rows = {"images": from_model_range(x.cpu()).numpy().copy()}
        if labels is not None:
            rows["labels"] = np.asarray(labels[index], dtype=np.int64)
        if features is not None:
            rows.update(features(rows["images"]))
        return rows

    return Job("sampling", n, identity, work, batch_size=batch_size, root=root, progress=progress)


# ------------------------------------------------------------------------------------------------ shards


def _digest(key: str, arrays: dict) -> str:
    h = hashlib.sha256(key.encode() + b"\0")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _checked(job: Job, start: int, stop: int, arrays: dict) -> dict:
    rows = {name: np.asarray(a) for name, a in arrays.items()}
    bad = [name for name, a in rows.items() if a.ndim == 0 or len(a) != stop - start or name.startswith("__")]
    if bad:
        raise ValueError(f"job {job.name}: work for images {start}..{stop} returned bad arrays {bad}")
    return rows


def write_shard(job: Job, start: int, stop: int, arrays: dict) -> Path:
    """Write images start .. stop-1 of the job atomically, with the job's key and a digest of both."""
    rows = _checked(job, start, stop, arrays)
    path = job.folder / f"{start:09d}-{stop:09d}.npz"
    key = job.key
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **rows, **{_KEY: np.frombuffer(key.encode(), np.uint8), _DIGEST: np.frombuffer(
                _digest(key, rows).encode(), np.uint8)})
    except OSError as err:
        raise _unwritable(job, err) from None
    return path


def _unwritable(job: Job, err: OSError) -> UserError:
    return UserError(f"{job.folder}: cannot write the job's shards there ({err.strerror or err}); free space or "
                     "choose another output location (the same command resumes from the shards written)")


def read_shard(path: Path, key: str) -> tuple[dict | None, str]:
    """(rows, "") of a shard that verifies under `key`, else (None, why it is refused)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        return None, f"unreadable ({type(err).__name__})"
    if _KEY not in arrays or _DIGEST not in arrays:
        return None, "not a shard (no key or digest)"
    stored_key, digest = arrays.pop(_KEY).tobytes().decode(errors="replace"), arrays.pop(_DIGEST).tobytes()
    if stored_key != key:
        return None, "from another job (its key differs: another run, checkpoint, sampler, seed or n)"
    if digest.decode(errors="replace") != _digest(key, arrays):
        return None, "altered (its digest does not match its contents)"
    return arrays, ""


def _scan(job: Job) -> list[tuple[int, int]]:
    """The (start, stop) of the shards that verify, not overlapping; the rest is reported and removed (rank 0)."""
    folder = job.folder
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder.parent / f"{folder.name}.json").write_text(json.dumps({"name": job.name, "n": job.n,
                                                                      **job.identity}, indent=1, default=str) + "\n")
    except OSError as err:
        raise _unwritable(job, err) from None
    done, covered = [], np.zeros(job.n, dtype=bool)
    for path in sorted(folder.iterdir()):
        m = _SHARD_NAME.fullmatch(path.name)
        if path.name.startswith(".") and ".tmp-" in path.name:
            path.unlink(missing_ok=True)  # a write that was killed before its rename
            continue
        start, stop = (int(m[1]), int(m[2])) if m else (0, 0)
        why = "" if m and 0 <= start < stop <= job.n and not covered[start:stop].any() else "not a shard of this job"
        if not why:
            rows, why = read_shard(path, job.key)
            if rows is not None and any(len(a) != stop - start for a in rows.values()):
                why = "its rows do not match its name"
        if why:
            print(f"warning: {path}: {why}; its images are computed again", file=sys.stderr)
            path.unlink(missing_ok=True)
            continue
        done.append((start, stop))
        covered[start:stop] = True
    return done


def _plan(done: list[tuple[int, int]], n: int, batch_size: int) -> list[tuple[int, int]]:
    """The images not in `done`, as batches of at most batch_size within each gap, in order."""
    batches, pos = [], 0
    for start, stop in sorted(done) + [(n, n)]:
        for a in range(pos, start, batch_size):
            batches.append((a, min(a + batch_size, start)))
        pos = max(pos, stop)
    return batches


def _collect(job: Job) -> dict:
    """Every row, read back from the shards in order (each verified again)."""
    parts, pos = [], 0
    for path in sorted(p for p in job.folder.iterdir() if _SHARD_NAME.fullmatch(p.name)):
        m = _SHARD_NAME.fullmatch(path.name)
        start, stop = int(m[1]), int(m[2])
        rows, why = read_shard(path, job.key)
        if start != pos or rows is None:
            raise RuntimeError(f"{path}: {why or f'starts at image {start}, expected {pos}'}; run the same command "
                               "again to redo it (is the folder on a file system every rank sees?)")
        parts.append(rows)
        pos = stop
    if pos != job.n:
        raise RuntimeError(f"{job.folder}: shards end at image {pos} of {job.n}; is the folder on a file system "
                           "every rank sees?")
    return _join(parts)


def _join(parts: list[dict]) -> dict:
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


__all__ = ["Job", "job_key", "model_identity", "sample_job", "read_shard", "remove_shards", "run_job", "shard_root", "write_shard"]
