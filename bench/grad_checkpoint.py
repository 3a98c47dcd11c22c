"""Activation checkpointing on the 256x256 network: peak memory and step time with and without, and what fits.

    python bench/grad_checkpoint.py                                  # celebahq256, batches 1 and 2: ~6 CPU-minutes
    python bench/grad_checkpoint.py --batches 1,2,4,8 --iters 2      # a longer slope

Each (batch, grad_checkpoint) pair runs in its own fresh process, alternating off / on: one full training step
(Trainer._train_step: forward, L_simple, backward, clip, Adam, EMA) of the `celebahq256` preset (the paper's 114M
U-Net) on random 256x256x3 images, --warmup untimed steps, then --iters timed ones. Memory is the process's peak
resident set (ru_maxrss) minus its resident set just before the first step (weights, Adam moments, EMA, data),
so the difference is what the steps need: activations, the gradients and Adam's two moments (both first allocated
in the first step), the autocast weight copies. A straight line through those (per-image slope and intercept) gives
the batch that fits in 16, 40 and 80 GB together with the state held before the first step (the fp32 weights and
the EMA). The line is from CPU resident memory: on a GPU the activations are the same tensors, but the
allocator, cuDNN workspaces and the CUDA context add their own, so read it as an estimate, measured on no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(job: dict) -> dict:
    from ddpmkit.config import RunConfig
    from ddpmkit.data.dataset import ImageDataset
    from ddpmkit.train.trainer import Trainer

    torch.set_num_threads(job["threads"])
    b = job["batch"]
    images = np.random.default_rng(0).integers(0, 256, (max(b, 4), 256, 256, 3), dtype=np.uint8)
    values = {"model.preset": "celebahq256", "train.batch_size": b, "train.warmup": 10,
              "train.grad_checkpoint": job["grad_checkpoint"], "train.precision": job["precision"]}
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(RunConfig().with_values(values), tmp, device="cpu", progress=False,
                     dataset=ImageDataset(images, None, "random"))
        before = _rss_mb()
        for step in range(job["warmup"]):
            tr._train_step(step)
        times = []
        for step in range(job["warmup"], job["warmup"] + job["iters"]):
            t0 = time.perf_counter()
            tr._train_step(step)
            times.append(time.perf_counter() - t0)
        params = sum(p.numel() for p in tr.model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": statistics.median(times), "peak_mb": peak, "before_mb": before, "step_mb": peak - before,
            "params": params, "precision": tr.precision.name}


def run_job(job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise RuntimeError(f"worker {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_mb() -> float:
    """MemAvailable of /proc/meminfo: the machine is shared, and an out-of-memory kill could hit anyone's process."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("inf")


def need_mb(rows: dict, gc: bool, batch: int) -> float:
    """The peak memory a batch will need, from the points measured so far with the same setting: the line through
    the last two (the resident set before the step plus the step's memory grows linearly in the batch), or the
    first point scaled by the batch when there is only one (an over-estimate)."""
    done = sorted((b, r["peak_mb"]) for (b, g), r in rows.items() if g == gc)
    if not done:
        return 0.0
    if len(done) == 1:
        return done[0][1] * batch / done[0][0]
    (b1, p1), (b2, p2) = done[-2:]
    return p2 + (batch - b2) * (p2 - p1) / (b2 - b1)


def fits(slope_mb: float, intercept_mb: float, state_mb: float, gb: int) -> int:
    """The largest batch whose step memory (intercept + slope * batch) and the model state fit in `gb` GB."""
    return max(0, int((gb * 1000 - state_mb - intercept_mb) // slope_mb))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--batches", default="1,2")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--precision", default="auto")
    p.add_argument("--json", type=Path, default=HERE / "out" / "grad_checkpoint.json")
    p.add_argument("--earlier", type=Path, help="a JSON of an earlier run whose rows join this run's")
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s), precision {args.precision}; load average "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    rows = {}
    if args.earlier:  # rows of an earlier run (other batches), to fit one line through all
        for key, row in json.loads(args.earlier.read_text())["rows"].items():
            b, gc = key.split(",")
            rows[int(b), gc == "True"] = row
        batches = sorted({b for b, _ in rows} | set(batches))
    for i, b in enumerate(batches):
        if (b, False) in rows and (b, True) in rows:
            continue
        for gc in (False, True) if i % 2 == 0 else (True, False):
            if need_mb(rows, gc, b) > 0.7 * available_mb():
                raise SystemExit(f"batch {b}: about {need_mb(rows, gc, b):.0f} MB needed, {available_mb():.0f} MB "
                                 "available: stopped")
            job = dict(batch=b, grad_checkpoint=gc, warmup=args.warmup, iters=args.iters, threads=args.threads,
                       precision=args.precision)
            rows[b, gc] = r = run_job(job)
            print(f"batch {b} grad_checkpoint {str(gc):<5}: {r['seconds']:.1f} s/step, step memory "
                  f"{r['step_mb']:.0f} MB (peak RSS {r['peak_mb']:.0f} MB, before the first step {r['before_mb']:.0f}"
                  f" MB; {r['precision']}) load {os.getloadavg()[0]:.1f}", flush=True)
    params = rows[batches[0], False]["params"]
    # The resident set before the first step holds the fp32 weights and the EMA; Adam's two moments and the
    # gradients are first allocated inside the measured steps, so they are in every step's memory (the line's
    # intercept) already and are not added again here.
    state_mb = 2 * params * 4 / 2**20
    out = {"rows": {f"{b},{gc}": r for (b, gc), r in rows.items()}, "state_mb": state_mb}
    print(f"model state before the first step (fp32 weights and EMA; {params:,} parameters): {state_mb:.0f} MB; "
          f"Adam's moments and the gradients are in the step memory")
    for gc in (False, True):
        x = np.array(batches, float)
        y = np.array([rows[b, gc]["step_mb"] for b in batches])
        slope, intercept = np.polyfit(x, y, 1) if len(x) > 1 else (y[0], 0.0)
        slow = statistics.median(rows[b, True]["seconds"] / rows[b, False]["seconds"] for b in batches)
        # a slope within the noise of RSS (<= 0: the step's peak did not grow with the batch) fits nothing
        fit = {gb: fits(slope, intercept, state_mb, gb) if slope > 0 else None for gb in (16, 40, 80)}
        out[f"grad_checkpoint={gc}"] = {"slope_mb_per_image": slope, "intercept_mb": intercept, "fits": fit}
        print(f"grad_checkpoint {gc}: {slope:.0f} MB per image + {intercept:.0f} MB; batch that fits: "
              + (", ".join(f"{gb} GB: {n}" for gb, n in fit.items()) if slope > 0 else
                 "not resolved: the peak did not grow with the batch here (measure larger batches)")
              + (f"; step time x{slow:.2f} of without" if gc else ""), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"load average at the end {os.getloadavg()[0]:.2f}; all numbers in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
