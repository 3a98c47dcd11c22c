"""Does bf16 cost quality? A network trained in fp32 and in bf16 autocast from the same seeds, side by side.

    python bench/bf16_quality.py                                  # 3 seeds x 300 steps: ~15 CPU-minutes, 1 thread
    python bench/bf16_quality.py --steps 1500 --seeds 0,1,2,3,4 --n 1000 --nll-n 297   # the preset's full length
    python bench/bf16_quality.py --data fashion-mnist --steps 1000 --seeds 0,1 --n 400 --nll-n 64   # ~30 min

--data digits: the digits preset, as `ddpm train --data digits`. --data fashion-mnist: the network and recipe that
`ddpm train --minutes 15` plans on this CPU for Fashion-MNIST (train/budget.py's smallest candidate, ch16x1, with
the budget recipe for --steps steps: batch 64, Adam 2e-3, 5% warm-up, cosine decay, power EMA, min-SNR weights),
because the fashion_mnist preset's 6.5M network takes 1-4 s a step here; its samples are DDIM 50 (eta 0) and its
scores FID in a Fashion-MNIST classifier's features (bench/budget.py's, trained once and cached in --out).

For each training seed, one fp32 run and one bf16 run (train.precision), alternating, everything else equal (same
initial weights, batches, t and noise). Printed:
  loss      the largest gap between the two runs' logged loss curves (means over --log-every steps), against the
            largest gap between the fp32 runs of different seeds (the seed spread).
  fd        Frechet distance in the digits classifier's feature space (bench/digits_score.py) of --n samples
            (Fashion-MNIST: FID in its classifier's features, DDIM 50 samples)
            (the preset's sampler, DPM-Solver++(2M) 20 steps, sampling seed 0) of each run's EMA weights, sampled in
            the run's own precision; also the fp32 runs sampled in bf16 (sampling alone). Mean and sd over seeds.
  bits/dim  the bound [DDPM Eq. 5] on --nll-n test digits of the first seed's fp32 and bf16 runs, with the network
            in fp32 and under bf16 autocast (the bound's arithmetic is fp64 either way): the relative change.
References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Algorithm 1, Eq. 5.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def train(args, seed: int, precision: str) -> Path:
    from ddpmkit.config import load_config
    from ddpmkit.train import budget
    from ddpmkit.train.trainer import Trainer

    torch.set_num_threads(args.threads)
    run = args.out / f"seed{seed}_{precision}"
    values = {"train.seed": seed, "train.precision": precision, "train.steps": args.steps, "train.sample_every": 0,
              "train.checkpoint_every": args.steps, "train.log_every": args.log_every}
    if args.data == "digits":
        config = load_config("digits")
    else:  # what `ddpm train --minutes 15` plans here: the smallest candidate and the budget recipe
        config = load_config("fashion_mnist").with_values({**budget.candidates(28)[0].model,
                                                           **budget._recipe(args.steps, 1)})
    config = config.with_values(values, source="bench/bf16_quality.py")
    t0 = time.perf_counter()
    Trainer(config, run, resume=True, device="cpu", progress=False).run()
    print(f"trained {run.name} in {time.perf_counter() - t0:.0f} s", flush=True)
    return run


def losses(run: Path) -> np.ndarray:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return np.array([r["loss"] for r in rows])


def fd(args, run: Path, precision: str) -> float:
    from ddpmkit.pipeline import load

    pipe = load(run, precision=precision)
    if args.data == "digits":
        from digits_score import score

        return score(pipe.sample(args.n, seed=0, batch_size=250))["fd"]
    from budget import score

    npz = run / f"ddim50_{precision}.npz"
    np.savez(npz, pipe.sample(args.n, seed=0, batch_size=200, sampler="ddim", steps=50))
    return score(npz, args.data, args.out)["fid"]


def bpd(args, run: Path, precision: str) -> float:
    from ddpmkit.data import load_dataset
    from ddpmkit.evaluate.nll import bits_per_dim
    from ddpmkit.pipeline import load

    pipe = load(run, precision=precision)
    test = load_dataset(args.data, split="test").images[:args.nll_n]
    return bits_per_dim(pipe.diffusion, pipe.network, test, batch_size=min(args.nll_n, 64), seed=0)["nll_bpd"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="digits", choices=("digits", "fashion-mnist"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--n", type=int, default=500, help="samples per FD")
    p.add_argument("--nll-n", type=int, default=64, help="test digits for the bound")
    p.add_argument("--threads", type=int, default=1, help="per training process")
    p.add_argument("--jobs", type=int, default=1, help="training processes at once (one per core)")
    p.add_argument("--out", type=Path, default=None, help="default bench/out/bf16_quality[_fashion-mnist]")
    args = p.parse_args(argv)
    args.out = args.out or HERE / "out" / ("bf16_quality" if args.data == "digits" else f"bf16_quality_{args.data}")
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"torch {torch.__version__}, {args.threads} thread(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    order = [(seed, prec) for i, seed in enumerate(seeds)  # fp32 first for even seeds, bf16 first for odd
             for prec in (("fp32", "bf16") if i % 2 == 0 else ("bf16", "fp32"))]
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = dict(zip(order, pool.map(train, [args] * len(order), *zip(*order))))
    out = {"args": {k: str(v) for k, v in vars(args).items()}}
    curves = {key: losses(run) for key, run in runs.items()}
    gaps = [float(np.max(np.abs(curves[s, "bf16"] - curves[s, "fp32"]))) for s in seeds]
    spread = max(float(np.max(np.abs(curves[a, "fp32"] - curves[b, "fp32"])))
                 for a in seeds for b in seeds if a < b)
    out["loss"] = {"gap_bf16_fp32_per_seed": gaps, "gap_between_fp32_seeds": spread,
                   "final_fp32": [float(curves[s, "fp32"][-1]) for s in seeds],
                   "final_bf16": [float(curves[s, "bf16"][-1]) for s in seeds]}
    print(f"loss curves (means over {args.log_every} steps): largest bf16-fp32 gap per seed "
          f"{', '.join(f'{g:.4f}' for g in gaps)}; largest gap between fp32 seeds {spread:.4f}", flush=True)
    fds = {"fp32 run, fp32 sampling": [fd(args, runs[s, "fp32"], "fp32") for s in seeds],
           "bf16 run, bf16 sampling": [fd(args, runs[s, "bf16"], "bf16") for s in seeds],
           "fp32 run, bf16 sampling": [fd(args, runs[s, "fp32"], "bf16") for s in seeds]}
    out["fd"] = fds
    for label, values in fds.items():
        metric = "fd" if args.data == "digits" else "fid"
        print(f"{metric} {label:<26} {statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} (sd over seeds; "
              f"{', '.join(f'{v:.3f}' for v in values)})", flush=True)
    bound = {f"{prec} run, {net} network": bpd(args, runs[seeds[0], prec], net)
             for prec in ("fp32", "bf16") for net in ("fp32", "bf16")}
    out["bits_per_dim"] = bound
    for prec in ("fp32", "bf16"):
        a, b = bound[f"{prec} run, fp32 network"], bound[f"{prec} run, bf16 network"]
        print(f"bits/dim, seed {seeds[0]} {prec} run: fp32 network {a:.5f}, bf16 network {b:.5f} "
              f"({(b - a) / a:+.3%})", flush=True)
    (args.out / "result.json").write_text(json.dumps(out, indent=1))
    print(f"load average at the end {os.getloadavg()[0]:.2f}; all numbers in {args.out / 'result.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
