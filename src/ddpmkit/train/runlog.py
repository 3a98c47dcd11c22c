"""What the training loop writes and listens to: metrics.jsonl and TensorBoard (MetricsLog), the run directory's
small files written atomically, and SIGINT/SIGTERM turned into "finish this step, save, stop" (StopOnSignals)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_path


def atomic_write(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def truncate_metrics(path: Path, step: int) -> None:
    """Drop log lines past `step` (written after the checkpoint a resumed run starts from)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    atomic_write(path, "".join(line + "\n" for line in keep))


class MetricsLog:
    """metrics.jsonl (and TensorBoard when installed): mean loss, lr and images/s per log interval."""

    def __init__(self, run_dir: Path, enabled: bool, batch_size: int, every: int):
        self.enabled, self.batch_size, self.every = enabled, batch_size, every
        self.file = open(run_dir / "metrics.jsonl", "a") if enabled else None
        self.tb = tensorboard(run_dir) if enabled else None
        self.losses, self.skipped, self.t0 = [], 0, time.perf_counter()

    def add(self, step: int, loss: float, applied: bool, lr: float, bar) -> None:
        if applied:
            self.losses.append(loss)
        else:
            self.skipped += 1
        n = len(self.losses) + self.skipped
        if not self.enabled or (step % self.every and n < self.every):
            return
        dt = time.perf_counter() - self.t0
        row = {"step": step, "loss": float(np.mean(self.losses)) if self.losses else float("nan"), "lr": lr,
               "images_per_sec": n * self.batch_size / dt, "skipped": self.skipped, "time": time.time()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            self.tb.add_scalar("loss", row["loss"], step)
            self.tb.add_scalar("images_per_sec", row["images_per_sec"], step)
        bar.set_postfix(loss=f"{row['loss']:.4f}", img_s=f"{row['images_per_sec']:.0f}")
        self.losses, self.skipped, self.t0 = [], 0, time.perf_counter()

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))


class StopOnSignals:
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, and return (the CLI exits 128 + signal)."""

    def __init__(self, trainer):  # a Trainer: its stop_signal is set
        self.trainer, self.old = trainer, {}

    def _handle(self, signum, frame):
        self.trainer.stop_signal = signal.Signals(signum).name

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc):
        for sig, old in self.old.items():
            signal.signal(sig, old)
