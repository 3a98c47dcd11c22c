"""KID's cost against FID's on the same features, and the overhead of evaluation during training (train.eval_every).

    nice -n 10 python bench/kid_eval.py --threads 1 --out bench/out/kid_eval          # the scaled-down default
    nice -n 10 python bench/kid_eval.py --threads 1 --n 50000 --steps 1500 --eval-n 1000   # the full size

1. KID vs FID. Feature arrays of --n real and --n generated vectors in two spaces: 2048-d (Inception pool3's size)
   and 128-d (the `ddpm train-classifier` default). The values are random normals: both metrics' cost depends on the
   sizes alone, not on the numbers. Timed: FID from scratch (two covariances and the Frechet distance), FID with the
   real statistics cached (as `ddpm eval` keeps them), and KID with the reference setting (100 subsets of 1000).
2. eval_every overhead. The digits preset (its own sampler, DPM-Solver++(2M), 20 NFE) trained for --steps steps
   twice from the same seed: without evaluation, and with train.eval_every = --steps / 2, train.eval_n = --eval-n,
   kid,fid,pr in the feature space of a small classifier trained here. Reported: the wall time of both runs, the
   evaluation's own time per evaluation (eval_seconds in metrics.jsonl), and the overhead in per cent, both
   between the two runs and within the evaluated run (evaluation time over the rest of its wall time).

Prints what it measured and writes results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def kid_vs_fid(n: int, dims: list[int]) -> list[dict]:
    from ddpmkit.evaluate.fid import feature_stats, frechet_distance
    from ddpmkit.evaluate.kid import kid

    rows = []
    for d in dims:
        rng = np.random.default_rng(d)
        real, fake = rng.normal(size=(n, d)), rng.normal(0.1, 1.0, size=(n, d))
        t_real, stats_real = _timed(lambda: feature_stats(real))
        t_fake, fid = _timed(lambda: frechet_distance(*feature_stats(fake), *stats_real))
        t_kid, out = _timed(lambda: kid(real, fake))
        row = {"dim": d, "n": n, "fid_s": t_real + t_fake, "fid_cached_real_s": t_fake, "kid_s": t_kid,
               "kid_subsets": out["kid_subsets"], "kid_subset_size": out["kid_subset_size"], "fid": fid,
               "kid": out["kid"], "kid_std": out["kid_std"]}
        print(f"d={d:5d} n={n}: FID {row['fid_s']:.2f} s (real stats cached: {t_fake:.2f} s), KID "
              f"{t_kid:.2f} s ({out['kid_subsets']} subsets of {out['kid_subset_size']}); "
              f"KID/FID = {t_kid / row['fid_s']:.2f}", flush=True)
        rows.append(row)
    return rows


def _train(out: Path, steps: int, extra: list[str]) -> float:
    from ddpmkit.cli import main

    argv = ["train", "--data", "digits", "--out", str(out), "--steps", str(steps), "--no-progress",
            "--sample-every", "0", "--checkpoint-every", str(steps), *extra]
    start = time.perf_counter()
    if main(argv) != 0:
        raise SystemExit(f"training failed: {' '.join(argv)}")
    return time.perf_counter() - start


def eval_overhead(out: Path, steps: int, eval_n: int) -> dict:
    from ddpmkit.data import load_dataset
    from ddpmkit.evaluate.classifier import train_classifier

    clf = out / "clf.safetensors"
    if not clf.exists():
        train_classifier(load_dataset("digits", split="train"), clf, steps=300, progress=False)
    t_plain = _train(out / "plain", steps, [])
    t_eval = _train(out / "with_eval", steps, ["--set", f"train.eval_every={steps // 2}", "--set",
                                                f"train.eval_n={eval_n}", "--set", "train.eval_metrics=kid,fid,pr",
                                                "--set", f'train.eval_features="{clf}"'])
    rows = [json.loads(line) for line in (out / "with_eval" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval" in r]
    result = {"steps": steps, "eval_n": eval_n, "evaluations": len(evals), "plain_s": t_plain, "with_eval_s": t_eval,
              "eval_seconds": [r["eval_seconds"] for r in evals], "overhead_pct": 100 * (t_eval / t_plain - 1),
              # within the one run: evaluation time over the rest (robust to load changing between the two runs)
              "overhead_within_pct": 100 * sum(r["eval_seconds"] for r in evals) / (
                  t_eval - sum(r["eval_seconds"] for r in evals)),
              "eval": [dict(step=r["step"], **r["eval"]) for r in evals]}
    print(f"digits, {steps} steps: {t_plain:.1f} s without evaluation, {t_eval:.1f} s with {len(evals)} evaluations "
          f"of {eval_n} samples (kid,fid,pr; eval_seconds {', '.join(f'{s:.1f}' for s in result['eval_seconds'])}): "
          f"overhead {result['overhead_pct']:.0f}% between the runs, {result['overhead_within_pct']:.0f}% "
          "within the eval run (evaluation time / the rest)", flush=True)
    for r in result["eval"]:
        print("  " + ", ".join(f"{k} {v:.4g}" for k, v in r.items()))
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="real and generated feature vectors each (full: 50000)")
    p.add_argument("--dims", default="2048,128")
    p.add_argument("--steps", type=int, default=200, help="training steps of the overhead runs (full: 1500)")
    p.add_argument("--eval-n", type=int, default=500, help="train.eval_n of the overhead run (full: 1000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/out/kid_eval"))
    p.add_argument("--skip", choices=("kid", "overhead"), help="leave one part out")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"threads": args.threads}
    if args.skip != "kid":
        result["kid_vs_fid"] = kid_vs_fid(args.n, [int(d) for d in args.dims.split(",")])
    if args.skip != "overhead":
        result["eval_overhead"] = eval_overhead(args.out, args.steps, args.eval_n)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
