"""Improved DDPM's claims at equal budget on small data: learned variances, the hybrid loss, L_vlb [IDDPM Sec. 3-4].

    python bench/improved.py --steps 1500 --n-samples 1000 --out bench/out/improved --threads 2

Three runs of the library's Trainer on the same data, preset, steps, batch and seed; only the loss and the variance
change. The schedule stays the preset's (the paper's linear, T = 1000), so the cosine schedule's own effect is left
out of the comparison:
    simple_fixed    L_simple, sigma^2 = beta_t (fixed_large)                  [DDPM Sec. 3.4]
    hybrid_learned  L_simple + 0.001 L_vlb, learned_range, uniform t          [IDDPM Sec. 3.1, Eq. 15-16]
    vlb_learned     L_vlb alone, learned_range, importance-sampled t          [IDDPM Sec. 3.3]
For each run (EMA weights): the bound in bits/dim on the test split (ddpmkit.evaluate.nll, all T terms), and for
simple_fixed and hybrid_learned the FID of --n-samples samples at 25, 50, 100 and 1000 respaced steps [IDDPM
Sec. 4, Fig. 8]; simple_fixed is also sampled with sigma^2 = beta~_t (same weights, "simple_fixed_small") and with
DDIM, eta = 0 ("simple_fixed_ddim", up to 100 steps) [Song et al. 2021, Eq. 12].
FID lives in the feature space of a small classifier trained here on the data's train split
(ddpmkit.evaluate.classifier), measured against the test split as `ddpm eval` does: comparable only within this
script's output. The "real" row is the FID of n real training images, the floor at this n.

A rerun with the same --out reuses finished runs, resumes unfinished ones from their last checkpoint (one per fifth
of --steps), reuses the classifier, and every figure already in
--out/results.json that was measured on the same weights with the same settings (so a new row or step count costs
only itself); it prints a table and writes results.json into --out. --timesteps overrides T, for smoke tests only
(e.g. --timesteps 20).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ddpmkit
from ddpmkit.config import load_config, parse_value
from ddpmkit.data import load_dataset
from ddpmkit.errors import UserError
from ddpmkit.evaluate.classifier import load_classifier, train_classifier
from ddpmkit.evaluate.fid import feature_stats, frechet_distance
from ddpmkit.evaluate.nll import bits_per_dim
from ddpmkit.pipeline import build_diffusion
from ddpmkit.samplers import model_device
from ddpmkit.store.checkpoint import list_checkpoints
from ddpmkit.train.trainer import Trainer

RUNS = {  # name -> (train.loss, diffusion.variance); train.timestep_sampler stays "auto"
    "simple_fixed": ("simple", "fixed_large"),
    "hybrid_learned": ("hybrid", "learned_range"),
    "vlb_learned": ("vlb", "learned_range"),
}
FID_ROWS = {  # row -> (run whose weights sample, variance to sample with, sampler)
    "simple_fixed": ("simple_fixed", "fixed_large", "ancestral"),
    "simple_fixed_small": ("simple_fixed", "fixed_small", "ancestral"),
    "simple_fixed_ddim": ("simple_fixed", "fixed_large", "ddim"),  # eta = 0, at most DDIM_MAX_STEPS steps
    "hybrid_learned": ("hybrid_learned", "learned_range", "ancestral"),
}
PRESETS = {"digits": "digits", "fashion-mnist": "fashion_mnist"}
DDIM_MAX_STEPS = 100  # DDIM is for few steps; the 1000-step reference is Algorithm 2 itself


def run_config(args, loss: str, variance: str):
    values = {"train.loss": loss, "diffusion.variance": variance, "train.steps": args.steps,
              "train.checkpoint_every": max(1, args.steps // 5),  # a killed run resumes from the last fifth
              "train.sample_every": args.steps, "train.num_samples": 16}
    if args.batch_size:
        values["train.batch_size"] = args.batch_size
    if args.timesteps:
        values["diffusion.timesteps"] = args.timesteps
        values["sample.steps"] = min(args.timesteps, 100)
    for item in args.set:  # e.g. a smaller network for Fashion-MNIST on a CPU budget: --set model.ch=32
        key, _, value = item.partition("=")
        values[key.strip()] = parse_value(value.strip())
    return load_config(PRESETS[args.data]).with_values(values, source="bench/improved.py --set")


def train(args, name: str) -> dict:
    """Train one run (or resume a finished one, which returns at once); its wall time and last logged loss."""
    loss, variance = RUNS[name]
    config = run_config(args, loss, variance)
    run_dir, timing = args.out / name, args.out / name / "bench_train_seconds.json"
    t0 = time.perf_counter()
    trainer = Trainer(config, run_dir, resume=True, device=args.device, progress=not args.no_progress)
    done = list_checkpoints(run_dir / "checkpoints")
    start = int(done[-1].name.split("_")[1]) if done else 0
    trainer.run()
    if start < config.train.steps:  # trained (part of) it now: keep the time for reruns
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t0, "from_step": start}))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"loss": loss, "variance": variance, "timestep_sampler": type(trainer.timesteps).__name__,
            "steps": config.train.steps, "batch_size": config.train.batch_size, "T": config.diffusion.timesteps,
            "train_seconds": json.loads(timing.read_text())["seconds"] if timing.exists() else None,
            "last_logged_loss": rows[-1]["loss"] if rows else None}


def nll(args, pipe, test: np.ndarray) -> dict:
    out = bits_per_dim(pipe.diffusion, pipe.model, test[: args.nll_n], batch_size=args.eval_batch, seed=0,
                       progress=not args.no_progress, device=model_device(pipe.model))
    return {k: out[k] for k in ("nll_bpd", "nll_bpd_sem", "prior_bpd", "decoder_bpd", "diffusion_bpd_by_quarter")}


def classifier(args, train_set):
    path = args.out / "classifier.safetensors"
    if not path.exists():
        result = train_classifier(train_set, path, progress=not args.no_progress)
        print(f"classifier: held-out accuracy {result['heldout_accuracy']:.3f}", file=sys.stderr)
    return load_classifier(path)


def fid_of(extractor, images: np.ndarray, real_stats: tuple) -> float:
    """FID of uint8 images (N, H, W, C) against the real statistics, in the extractor's feature space."""
    return frechet_distance(*feature_stats(extractor(images)["features"]), *real_stats)


def fid_rows(args, pipes: dict, extractor, real_stats, train_set, cached: dict) -> dict:
    """{row: {steps: fid}} for each sampling row, and the real-data floor; `cached` holds earlier figures."""
    out = {}
    for row, (run, variance, sampler) in FID_ROWS.items():
        pipe = pipes[run]
        if variance != pipe.diffusion.variance:  # same weights, another fixed sigma^2
            config = pipe.config.replace("diffusion.variance", variance)
            pipe = dataclasses.replace(pipe, diffusion=build_diffusion(config).to(model_device(pipe.model)))
        out[row] = {int(k): v for k, v in cached.get(row, {}).items()}  # keep step counts not asked for now
        for steps in args.sample_steps:
            if sampler == "ddim" and steps > DDIM_MAX_STEPS:
                continue
            if str(steps) in cached.get(row, {}):
                out[row][steps] = cached[row][str(steps)]
                continue
            t0 = time.perf_counter()
            images = pipe.sample(args.n_samples, sampler=sampler, steps=steps, eta=0.0, seed=0,
                                 batch_size=args.eval_batch)
            out[row][steps] = fid_of(extractor, images, real_stats)
            print(f"{row} @ {steps} steps: FID {out[row][steps]:.3f} ({time.perf_counter() - t0:.0f} s)",
                  file=sys.stderr)
    pick = np.random.default_rng(0).permutation(len(train_set))[: args.n_samples]
    out["real"] = {"any": fid_of(extractor, train_set.images[pick], real_stats), "n": len(pick)}
    out["seed_spread"] = seed_spread(args, pipes["simple_fixed"], extractor, real_stats,
                                     cached.get("seed_spread", {}))
    return out


def seed_spread(args, pipe, extractor, real_stats, cached: dict) -> dict:
    """How much the FID moves when only the sampling seed changes: simple_fixed at the fewest steps, seeds 0-4.
    A difference between rows smaller than this spread is noise."""
    steps = min(args.sample_steps)
    if cached.get("steps") == steps:
        return cached
    fids = []
    for seed in range(5):
        images = pipe.sample(args.n_samples, steps=steps, seed=seed, batch_size=args.eval_batch)
        fids.append(fid_of(extractor, images, real_stats))
    return {"steps": steps, "fids": fids, "sd": float(np.std(fids, ddof=1))}


def earlier_results(args, result: dict) -> dict:
    """--out/results.json's figures when they were measured on the same weights and settings, else nothing."""
    path = args.out / "results.json"
    if not path.exists():
        return {"runs": {}}
    old = json.loads(path.read_text())
    same = ["data", "nll_n", "n_samples", "eval_batch", "timesteps", "steps", "batch_size", "set"]
    if old.get("data") != result["data"] or any(old["args"].get(k) != result["args"][k] for k in same):
        return {"runs": {}}
    if old.get("weights") != weights_ids(args):
        return {"runs": {}}
    return old


def weights_ids(args) -> dict:
    """SHA-256 of what the figures depend on: each run's newest EMA weights (as its manifest records them) and the
    classifier whose features the FIDs are in (None before it exists)."""
    ids = {}
    for name in RUNS:
        newest = list_checkpoints(args.out / name / "checkpoints")[-1]
        ids[name] = json.loads((newest / "manifest.json").read_text())["files"]["ema.safetensors"]["sha256"]
    path = args.out / "classifier.safetensors"
    ids["classifier"] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
    return ids


def table(result: dict, sample_steps: list[int]) -> str:
    head = f"{'run':<20}{'loss':<8}{'variance':<14}{'bits/dim':>16}" + "".join(f"{f'FID@{s}':>10}" for s in
                                                                             sample_steps)
    lines = [head, "-" * len(head)]
    fid = result["fid"]
    rows = {**FID_ROWS, **{name: (name, RUNS[name][1], "ancestral") for name in RUNS if name not in FID_ROWS}}
    for row, (run, variance, sampler) in rows.items():
        r = result["runs"][run]
        bpd = f"{r['nll']['nll_bpd']:.3f} +- {r['nll']['nll_bpd_sem']:.3f}" if row == run else "(same weights)"
        cells = "".join(f"{fid[row][s]:>10.3f}" if s in fid.get(row, {}) else f"{'-':>10}" for s in sample_steps)
        label = variance if sampler == "ancestral" else f"{sampler}, eta 0"
        lines.append(f"{row:<20}{r['loss']:<8}{label:<14}{bpd:>16}{cells}")
    real = fid["real"]
    lines.append(f"{'real (train split)':<42}{'':>16}{real['any']:>10.3f}  (n = {real['n']}, any steps)")
    spread = fid["seed_spread"]
    lines.append(f"FID noise: simple_fixed @ {spread['steps']} steps with sampling seeds 0-4: "
                 f"{', '.join(f'{x:.3f}' for x in spread['fids'])} (sd {spread['sd']:.3f})")
    return "\n".join(lines)


def one_line_errors(body, argv) -> int:
    """body(argv), with ddpmkit's user errors (a bad --set, missing data, a run dir that cannot be written) as one
    line on stderr and exit code 2; every bench's main goes through it."""
    try:
        return body(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps of each run (default 1500, the preset's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the preset's (digits: 64)")
    p.add_argument("--n-samples", type=int, default=1000, help="samples per FID (default 1000)")
    p.add_argument("--nll-n", type=int, default=297, help="test images for bits/dim (default 297, all digits')")
    p.add_argument("--sample-steps", default="25,50,100,1000", help="respaced sampling steps for FID")
    p.add_argument("--out", type=Path, default=Path("bench/out/improved"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data", choices=sorted(PRESETS), default="digits")
    p.add_argument("--timesteps", type=int, default=None, help="override T (smoke tests only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a config value of all three runs, as `ddpm train --set` (changes which runs --out reuses)")
    p.add_argument("--device", default="auto")
    p.add_argument("--eval-batch", type=int, default=500)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    T = args.timesteps or load_config(PRESETS[args.data]).diffusion.timesteps
    args.sample_steps = sorted({min(int(x), T) for x in args.sample_steps.split(",")})  # T steps at most
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"data": args.data, "args": {k: str(v) for k, v in vars(args).items()}, "runs": {},
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    for name in RUNS:
        result["runs"][name] = train(args, name)
    previous = earlier_results(args, result)
    pipes = {name: ddpmkit.load(args.out / name, device=args.device) for name in RUNS}
    test = load_dataset(args.data, split="test")
    for name, pipe in pipes.items():
        if "nll" in previous["runs"].get(name, {}):
            result["runs"][name].update({k: previous["runs"][name][k] for k in ("nll", "nll_seconds")})
            continue
        t0 = time.perf_counter()
        result["runs"][name]["nll"] = nll(args, pipe, test.images)
        result["runs"][name]["nll_seconds"] = time.perf_counter() - t0
    train_set = load_dataset(args.data, split="train")
    extractor = classifier(args, train_set)
    real_stats = feature_stats(extractor(test.images)["features"])
    result["fid"] = fid_rows(args, pipes, extractor, real_stats, train_set, previous.get("fid", {}))
    result["feature_space"] = extractor.description
    result["weights"] = weights_ids(args)
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    print(table(result, args.sample_steps))
    print(f"\n{extractor.description}\nwritten: {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
