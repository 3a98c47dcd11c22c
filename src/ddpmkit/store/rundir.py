"""The run directory: where a run's config and checkpoints live, and how a stored model is found in it.

    RUN_DIR/
        config.toml        the resolved run config (TOML, as `ddpm train --dry-run` prints it)
        checkpoints/       step_XXXXXXXXX folders in the checkpoint format (checkpoint.py)
        ...                what the trainer or an importer adds: metrics.jsonl, samples/, imported.json

A model is read from the newest checkpoint that verifies (or from one checkpoint folder); the checkpoint's own
config.json ({"run": RunConfig as a dict, "image_size", "channels", ...}) is what rebuilds the network, so a
checkpoint folder copied elsewhere still loads. `write_run` creates a whole run directory atomically (an import):
it is built beside RUN_DIR under a temporary name and renamed into place only when complete.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import RunConfig, to_toml
from ..errors import CheckpointError, UserError
from .checkpoint import MANIFEST, Checkpoint, latest_valid_checkpoint, load_checkpoint, save_checkpoint

CONFIG_TOML = "config.toml"
CHECKPOINTS = "checkpoints"


@dataclass
class StoredRun:
    """A verified checkpoint with its run config: everything needed to rebuild the network and its process."""

    checkpoint: Checkpoint
    config: RunConfig
    image_size: int
    channels: int

    @property
    def step(self) -> int:
        return self.checkpoint.step

    @property
    def path(self) -> Path:
        return self.checkpoint.path

    def weights(self, ema: bool = True) -> tuple[str, dict[str, torch.Tensor]]:
        """("ema", state_dict) when asked and present, else ("model", state_dict)."""
        name = "ema" if ema and "ema" in self.checkpoint.weights else "model"
        return name, self.checkpoint.weights[name]


def find_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint folder `path`, or the newest valid checkpoint of run directory `path` (warnings on stderr)."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return load_checkpoint(path)
    if path.is_dir():
        ckpt, warnings = latest_valid_checkpoint(path / CHECKPOINTS)
        for w in warnings:
            print(f"warning: {w}", file=sys.stderr)
        if ckpt is None:
            raise CheckpointError(f"{path}: no valid checkpoint in {path / CHECKPOINTS}; train first with ddpm train")
        return ckpt
    raise CheckpointError(f"{path}: no such run directory or checkpoint folder")


def open_run(path: str | Path) -> StoredRun:
    """A StoredRun from a run directory (its newest valid checkpoint) or from one checkpoint folder."""
    ckpt = find_checkpoint(path)
    if ckpt.config is None or "run" not in ckpt.config:
        raise CheckpointError(f"{ckpt.path}: the checkpoint has no config.json with the run's config")
    config = RunConfig.from_dict(ckpt.config["run"], source=f"{ckpt.path}/config.json")
    return StoredRun(ckpt, config, ckpt.config["image_size"], ckpt.config["channels"])


@contextmanager
def new_directory(path: str | Path, flag: str = "--out"):
    """Yield a temporary folder beside `path`; when the block succeeds, rename it to `path` (all or nothing).

    An existing non-empty `path` is refused; an OS failure is a UserError naming `flag`; on any failure the
    temporary folder is removed and `path` is as it was.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UserError(f"{flag} {path}: exists and is not an empty directory; choose a new {flag}")
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        yield tmp
        if path.exists():
            path.rmdir()  # empty, checked above
        os.replace(tmp, path)
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write there ({err.strerror or err})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_run(run_dir: str | Path, config: RunConfig, meta: dict, weights: dict[str, dict[str, torch.Tensor]], *,
              step: int = 0, state: dict | None = None, files: dict[str, str] | None = None) -> Path:
    """Create run directory `run_dir` holding config.toml, one checkpoint and `files` (name -> text), atomically.

    `meta` joins the checkpoint's config.json beside {"run": the config}; it must hold "image_size" and
    "channels". An existing non-empty `run_dir` is refused; on any failure nothing is left at `run_dir`.
    Returns the checkpoint's folder.
    """
    run_dir = Path(run_dir)
    with new_directory(run_dir) as tmp:
        (tmp / CONFIG_TOML).write_text(to_toml(config))
        for name, text in (files or {}).items():
            (tmp / name).write_text(text)
        ckpt = save_checkpoint(tmp / CHECKPOINTS, step, weights=weights, state=state or {"step": step},
                               config={"run": config.to_dict(), **meta}, keep=1)
    return run_dir / CHECKPOINTS / ckpt.name
