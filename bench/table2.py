"""The six rows of DDPM's Table 2 at CPU scale: what the network predicts, crossed with the objective [DDPM Sec. 4.2].

    python bench/table2.py --steps 400 --n-samples 200 --seeds 0,1,2 --threads 1 --out bench/out/table2

Six runs of the library's Trainer on the same data, preset, steps, batch and seed (each a `--set` line of
`ddpm train`, printed with the table); only the parameterization, the loss and the variance change:
    xprev_kl_learned   mu~ prediction, L, learned diagonal Sigma   parameterization "xprev", loss "kl", "learned"
    xprev_kl_fixed     mu~ prediction, L, fixed isotropic Sigma    "xprev", "kl", "fixed_large"
    xprev_mse          mu~ prediction, ||mu~ - mu~_theta||^2       "xprev", "simple", "fixed_large"
    eps_kl_learned     eps prediction, L, learned diagonal Sigma   "eps", "kl", "learned"
    eps_kl_fixed       eps prediction, L, fixed isotropic Sigma    "eps", "kl", "fixed_large"
    eps_simple         eps prediction, L_simple                    "eps", "simple", "fixed_large"
("L" is the authors' loss_type "kl": the bound's term at one uniform t in bits/dim, decoder included.)

For each run (EMA weights):
- FID of --n-samples samples from Algorithm 2 respaced to --sample-steps steps, once per sampling seed (--seeds),
  in the features of a small classifier trained here on the train split, against the test split (as
  bench/improved.py: comparable within this script only); mean and standard deviation over the seeds.
- bits/dim on the test split: L_T and the decoder L_0 exactly, and L_1 .. L_{T-1} by a stratified estimate, one
  uniformly drawn t per image in each stratum of --stride consecutive t, weighted by the stratum's size: unbiased
  for the full sum, and --stride times cheaper than all T terms. For fixed_large runs also the decoder with
  sigma_1^2 = beta_1 (what ddpmkit used before the authors' beta~_2), to measure how far that moves the bound.
- stable or not, by measurement: "unstable" if any logged training loss is non-finite, or the bound is not below
  8 bits/dim (a uniform distribution over the 256 grey levels), or the FID is above half the FID of Gaussian noise
  images (samples out of the range the other rows span, the paper's "out-of-range scores").
- the global gradient norm of the "kl" loss and of the "vlb" loss (the same t and noise: vlb = T kl + L_T) on 8
  batches, at the trained weights: how often clipping at 1 binds for each.

A rerun with the same --out reuses finished runs and resumes unfinished ones. --timesteps overrides T (smoke tests).
Prints the table and writes results.json and table2.png into --out.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ddpmkit
from ddpmkit.config import load_config, parse_value
from ddpmkit.data import load_dataset, to_model_range
from ddpmkit.evaluate.fid import feature_stats
from ddpmkit.losses import LOG2, discretized_gaussian_log_likelihood, mean_flat
from ddpmkit.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from improved import classifier, fid_of, one_line_errors  # noqa: E402

ROWS = {  # name -> (Table 2's row, parameterization, train.loss, diffusion.variance)
    "xprev_kl_learned": ("mu~ prediction, L, learned diagonal Sigma", "xprev", "kl", "learned"),
    "xprev_kl_fixed": ("mu~ prediction, L, fixed isotropic Sigma", "xprev", "kl", "fixed_large"),
    "xprev_mse": ("mu~ prediction, ||mu~ - mu~_theta||^2", "xprev", "simple", "fixed_large"),
    "eps_kl_learned": ("eps prediction, L, learned diagonal Sigma", "eps", "kl", "learned"),
    "eps_kl_fixed": ("eps prediction, L, fixed isotropic Sigma", "eps", "kl", "fixed_large"),
    "eps_simple": ("eps prediction, L_simple", "eps", "simple", "fixed_large"),
}
PAPER = {  # DDPM Table 2, CIFAR-10: (IS, FID); None where the paper has a blank ("unstable to train")
    "xprev_kl_learned": (7.28, 23.69), "xprev_kl_fixed": (8.06, 13.22), "xprev_mse": None,
    "eps_kl_learned": None, "eps_kl_fixed": (7.67, 13.51), "eps_simple": (9.46, 3.17),
}
PRESETS = {"digits": "digits", "fashion-mnist": "fashion_mnist"}


def set_lines(name: str) -> list[str]:
    _, param, loss, variance = ROWS[name]
    return [f'diffusion.parameterization="{param}"', f'train.loss="{loss}"', f'diffusion.variance="{variance}"']


def run_config(args, name: str):
    values = {k: parse_value(v) for k, _, v in (s.partition("=") for s in set_lines(name))}
    values.update({"train.steps": args.steps, "train.checkpoint_every": max(1, args.steps // 4),
                   "train.sample_every": args.steps, "train.num_samples": 16})
    if args.timesteps:
        values["diffusion.timesteps"] = args.timesteps
        values["sample.steps"] = min(args.timesteps, 20)
    for item in args.set:
        key, _, value = item.partition("=")
        values[key.strip()] = parse_value(value.strip())
    return load_config(PRESETS[args.data]).with_values(values, source="bench/table2.py --set")


def train(args, name: str) -> dict:
    config = run_config(args, name)
    t0 = time.perf_counter()
    trainer = Trainer(config, args.out / name, resume=True, device="cpu", progress=not args.no_progress)
    trainer.run()
    if trainer.stop_signal is not None or trainer.step < config.train.steps:  # SIGINT/SIGTERM: stop the bench too
        raise SystemExit(f"{name} stopped at step {trainer.step}; rerun the same command to resume")
    rows = [json.loads(x) for x in (args.out / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    losses = [r["loss"] for r in rows]
    return {"set": set_lines(name), "steps": config.train.steps, "seconds": time.perf_counter() - t0,
            "losses_logged": len(losses), "nonfinite_losses": sum(not math.isfinite(x) for x in losses),
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


@torch.no_grad()
def bound(args, pipe, images: np.ndarray) -> dict:
    """bits/dim: L_T and L_0 exact, L_1..L_{T-1} stratified (one t per image per stratum of args.stride)."""
    d, model = pipe.diffusion, pipe.model
    T, g = d.num_timesteps, torch.Generator().manual_seed(0)
    x0 = to_model_range(torch.from_numpy(images)).double()  # (N, C, H, W)
    n = len(x0)
    total = d.prior_bpd(x0).double()

    def term(t: torch.Tensor) -> tuple[torch.Tensor, dict]:
        xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=x0.dtype))
        p = d.p_mean_variance(model, xt.float(), t, clip_denoised=True)
        return d.vlb_term_bpd(x0, xt, t, {k: v.double() for k, v in p.items()}).double(), p

    decoder, p0 = term(torch.zeros(n, dtype=torch.int64))
    total += decoder
    out = {"decoder_bpd": float(decoder.mean())}
    if d.variance == "fixed_large":  # the decoder with sigma_1^2 = beta_1, as ddpmkit had it before
        log_scale = 0.5 * math.log(float(d.beta[0]))
        ll = discretized_gaussian_log_likelihood(x0, p0["mean"].double(), torch.full_like(x0, log_scale))
        out["decoder_bpd_beta1"] = float((-mean_flat(ll) / LOG2).mean())
    for lo in range(1, T, args.stride):
        hi = min(lo + args.stride, T)
        t = torch.randint(lo, hi, (n,), generator=g)
        total += (hi - lo) * term(t)[0]
    out.update({"nll_bpd": float(total.mean()), "nll_bpd_sem": float(total.std() / math.sqrt(n)), "n": n})
    if "decoder_bpd_beta1" in out:
        out["nll_bpd_beta1"] = out["nll_bpd"] - out["decoder_bpd"] + out["decoder_bpd_beta1"]
    return out


def grad_norms(args, pipe, train_images: np.ndarray) -> dict:
    """Global gradient norm of the mean "kl" and "vlb" loss on 8 batches of 64 (same t and noise for both)."""
    d, model = pipe.diffusion, pipe.model
    g = torch.Generator().manual_seed(1)
    norms = {"kl": [], "vlb": []}
    for _ in range(8):
        pick = torch.randint(0, len(train_images), (64,), generator=g)
        x0 = to_model_range(torch.from_numpy(train_images[pick.numpy()]))
        t = torch.randint(0, d.num_timesteps, (64,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        for loss in norms:
            model.zero_grad(set_to_none=True)
            d.training_loss(model, x0, t, noise, loss=loss).mean().backward()
            sq = sum(float((p.grad.double() ** 2).sum()) for p in model.parameters() if p.grad is not None)
            norms[loss].append(math.sqrt(sq))
    model.zero_grad(set_to_none=True)
    return {k: {"median": float(np.median(v)), "share_above_1": float(np.mean(np.array(v) > 1))}
            for k, v in norms.items()}


def fids(args, pipe, extractor, real_stats) -> list[float]:
    out = []
    for seed in args.seeds:
        images = pipe.sample(args.n_samples, sampler="ancestral", steps=args.sample_steps, seed=seed,
                             batch_size=args.n_samples)
        out.append(fid_of(extractor, images, real_stats))
    return out


def noise_fid(args, extractor, real_stats, shape) -> float:
    """FID of N(0, I) images clipped to [-1, 1], uint8 (N, H, W, C): the ceiling for "out of range"."""
    x = torch.randn((args.n_samples, *shape), generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    images = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    return fid_of(extractor, images, real_stats)


def judge(r: dict, noise: float) -> str:
    why = []
    if r["train"]["nonfinite_losses"]:
        why.append("non-finite loss")
    if not r["nll"]["nll_bpd"] < 8.0:
        why.append("bound >= 8 bits/dim")
    if not np.mean(r["fid"]) < noise / 2:
        why.append("FID > noise/2")
    return "stable" if not why else "unstable (" + ", ".join(why) + ")"


def table(result: dict) -> str:
    head = (f"{'row':<18}{'FID mean +- sd':>18}{'bits/dim +- se':>18}{'L_0':>8}{'L_0(b1)':>9}"
            f"{'|g| kl':>9}{'|g| vlb':>9}  verdict")
    lines = [head, "-" * len(head)]
    for name, r in result["rows"].items():
        f, b = r["fid"], r["nll"]
        beta1 = f"{b['decoder_bpd_beta1']:>9.3f}" if "decoder_bpd_beta1" in b else f"{'-':>9}"
        lines.append(f"{name:<18}{np.mean(f):>10.2f} +- {np.std(f, ddof=1) if len(f) > 1 else 0:<5.2f}"
                     f"{b['nll_bpd']:>10.3f} +- {b['nll_bpd_sem']:<5.3f}{b['decoder_bpd']:>8.3f}{beta1}"
                     f"{r['grad']['kl']['median']:>9.3g}{r['grad']['vlb']['median']:>9.3g}  {r['verdict']}")
    lines.append(f"FID of Gaussian-noise images: {result['noise_fid']:.2f}; per-seed FIDs in results.json")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["rows"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, label in ((axes[0], "fid", "FID (digit-classifier features), mean +- sd over seeds"),
                           (axes[1], "nll", "bits/dim on the test split (+- s.e.)")):
        if key == "fid":
            vals = [np.mean(result["rows"][n]["fid"]) for n in names]
            errs = [np.std(result["rows"][n]["fid"], ddof=1) if len(result["rows"][n]["fid"]) > 1 else 0 for n in names]
        else:
            vals = [result["rows"][n]["nll"]["nll_bpd"] for n in names]
            errs = [result["rows"][n]["nll"]["nll_bpd_sem"] for n in names]
        colors = ["tab:red" if result["rows"][n]["verdict"] != "stable" else "tab:blue" for n in names]
        ax.barh(names, vals, xerr=errs, color=colors)
        if key == "nll" and max(vals) > 20 * min(vals):
            ax.set_xscale("log")  # untrained rows sit orders of magnitude above the trained ones
        ax.invert_yaxis()
        ax.set_title(label, fontsize=9)
    fig.suptitle(f"DDPM Table 2 on {result['data']}, {result['steps']} steps each (red: unstable)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--n-samples", type=int, default=200)
    p.add_argument("--seeds", default="0,1,2", help="sampling seeds for the FID spread")
    p.add_argument("--sample-steps", type=int, default=50, help="Algorithm 2 respaced to this many steps")
    p.add_argument("--stride", type=int, default=10, help="t per stratum of the bound's estimate (1: all terms)")
    p.add_argument("--nll-n", type=int, default=297, help="test images for bits/dim (297: all of digits')")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--out", type=Path, default=Path("bench/out/table2"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--data", choices=sorted(PRESETS), default="digits")
    p.add_argument("--timesteps", type=int, default=None, help="override T (smoke tests only)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config value of every row")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.seeds = [int(s) for s in args.seeds.split(",")]
    names = [n for n in args.rows.split(",") if n]
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"data": args.data, "steps": args.steps, "args": {k: str(v) for k, v in vars(args).items()},
              "threads": torch.get_num_threads(), "rows": {}}
    if args.train_only:
        for name in names:
            train(args, name)
        return 0
    test, train_set = load_dataset(args.data, split="test"), load_dataset(args.data, split="train")
    extractor = classifier(args, train_set)
    real_stats = feature_stats(extractor(test.images)["features"])
    result["noise_fid"] = noise_fid(args, extractor, real_stats, test.images.shape[1:])
    result["feature_space"] = extractor.description
    for name in names:  # one row at a time, written as it finishes, so a stopped bench keeps its finished rows
        trained = train(args, name)
        pipe = ddpmkit.load(args.out / name, device="cpu")
        t0 = time.perf_counter()
        r = {"row": ROWS[name][0], "train": trained, "paper": PAPER[name]}
        r["nll"] = bound(args, pipe, test.images[: args.nll_n])
        r["fid"] = fids(args, pipe, extractor, real_stats)
        r["grad"] = grad_norms(args, pipe, train_set.images)
        r["verdict"] = judge(r, result["noise_fid"])
        r["eval_seconds"] = time.perf_counter() - t0
        result["rows"][name] = r
        print(f"{name}: {json.dumps({k: r[k] for k in ('nll', 'fid', 'grad', 'verdict')}, default=float)}",
              file=sys.stderr, flush=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    plot(result, args.out / "table2.png")
    print(table(result))
    for name in names:
        print(f"{name}: ddpm train --config {PRESETS[args.data]} " + " ".join(f"--set {s}" for s in set_lines(name)))
    print(f"\n{extractor.description}\nwritten: {args.out / 'results.json'}, {args.out / 'table2.png'}")
    return 0


def main(argv=None) -> int:
    return one_line_errors(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
