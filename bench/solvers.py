"""Fast samplers on trained models: FID against network evaluations (NFE), and the distance to the ODE's endpoint.

    python bench/solvers.py --out bench/out/solvers --threads 2

1. digits (the quickstart's model: `ddpm train --data digits`, trained here into --out/digits unless --digits-run
   names one): FID of --n-samples samples in a digit classifier's features (trained here, as bench/improved.py
   does) for every sampler at K = 5, 10, 15, 20, 50, 100 nodes, each sampler with its default spacing, beside
   1000-step ancestral sampling (Algorithm 2, sampling seeds 0 .. --t-seeds - 1); the yardstick is the spread of
   the FID over sampling seeds 0 .. --seeds - 1 at 20 (dpm++2m) and 100 (ancestral) steps.
2. The same digits model sampled by diffusers' DPMSolverMultistepScheduler (order 2, data prediction, the model's
   own betas, our nodes, final step to sigma = 0) from the same x_T as ours: the largest difference, and both FIDs
   (neither clips x0 here, so both run the same algorithm). Needs `pip install diffusers`; skipped without it.
3. Fashion-MNIST, a small network trained here for --fm-steps (same weights for every row): for each deterministic
   solver the RMSE on [0, 255] between its samples and the converged ODE endpoint (dpm++3m on all T nodes, same
   x_T) against NFE, as a plot (--out/fm_rmse.png); and FID at <= 20 NFE against ancestral and DDIM at 100 steps
   (in a Fashion-MNIST classifier's features).
Every figure is kept in --out/results.json with the SHA-256 of the weights and classifier it was measured on; a
rerun reuses it and measures only what is missing. --timesteps overrides T (smoke tests only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ddpmkit
from ddpmkit.config import load_config, parse_value
from ddpmkit.data import from_model_range, load_dataset
from ddpmkit.evaluate.classifier import load_classifier, train_classifier
from ddpmkit.evaluate.fid import feature_stats
from ddpmkit.samplers import DETERMINISTIC, SAMPLERS, model_device, timestep_nodes
from ddpmkit.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from improved import fid_of, one_line_errors  # noqa: E402  (the FID and error handling of bench/improved.py)

DIGITS_K = (5, 10, 15, 20, 50, 100)
FM_K = (5, 10, 20, 50, 100)
FM_FID_ROWS = {"dpm++2m": 20, "dpm++3m": 20, "heun": 10, "ddim": 20}  # <= 20 NFE each
FM_BASELINES = {"ancestral": 100, "ddim": 100}


class Cache:
    """results.json: figures keyed by what they were measured on; a change of weights or classifier drops them."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}

    def get(self, key: str, measure):
        if key not in self.data:
            t0 = time.perf_counter()
            value = measure()
            print(f"{key}: {value} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
            if self.path.exists():  # another run of this script may have added figures meanwhile
                self.data = {**json.loads(self.path.read_text()), **self.data}
            self.data[key] = value
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, indent=1, default=float))
            tmp.replace(self.path)
        return self.data[key]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def train_run(args, name: str, preset: str, steps: int, extra: dict) -> Path:
    values = {"train.steps": steps, "train.checkpoint_every": max(1, steps // 5), "train.sample_every": steps,
              "train.num_samples": 16, **extra}
    if args.timesteps:
        values.update({"diffusion.timesteps": args.timesteps, "sample.steps": min(args.timesteps, 100)})
    config = load_config(preset).with_values(values, source="bench/solvers.py")
    result = Trainer(config, args.out / name, resume=True, device=args.device, progress=not args.no_progress).run()
    if result["interrupted"]:  # SIGINT/SIGTERM: the checkpoint is saved; a rerun resumes from it
        sys.exit(f"stopped by {result['interrupted']} while training {name}; rerun to resume")
    return args.out / name


def classifier(args, data: str):
    path = args.out / f"classifier_{data}.safetensors"
    if not path.exists():
        result = train_classifier(load_dataset(data, split="train"), path, progress=not args.no_progress)
        print(f"{data} classifier: held-out accuracy {result['heldout_accuracy']:.3f}", file=sys.stderr)
    return load_classifier(path), sha(path)


def weights_id(run: Path) -> str:
    newest = sorted((run / "checkpoints").glob("step_*"))[-1]
    return json.loads((newest / "manifest.json").read_text())["files"]["ema.safetensors"]["sha256"][:16]


def x_T_for(pipe, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, pipe.channels, pipe.image_size, pipe.image_size, generator=g).to(model_device(pipe.model))


def solve(pipe, x_T, sampler: str, steps: int, *, clip: bool = True, seed: int = 0, batch: int = 500) -> torch.Tensor:
    """Samples in [-1, 1] (n, C, H, W) on the CPU from the given x_T, in batches."""
    out = []
    for start in range(0, len(x_T), batch):
        gen = torch.Generator(model_device(pipe.model)).manual_seed(seed + start)
        out.append(pipe.diffusion.sample(pipe.model, None, sampler=sampler, steps=steps, x_T=x_T[start:start + batch],
                                         clip_denoised=clip, generator=gen).cpu())
    return torch.cat(out)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    return from_model_range(x).numpy()


def digits_part(args, cache: Cache) -> dict:
    run = args.digits_run or train_run(args, "digits", "digits", args.digits_steps, {})
    pipe = ddpmkit.load(run, device=args.device)
    extractor, clf_id = classifier(args, "digits")
    real_stats = feature_stats(extractor(load_dataset("digits", split="test").images)["features"])
    key = f"digits|{weights_id(run)}|{clf_id}|n{args.n_samples}"
    T = pipe.diffusion.num_timesteps
    train = load_dataset("digits", split="train").images
    pick = np.random.default_rng(0).permutation(len(train))[: args.n_samples]
    out = {"rows": {}, "real": cache.get(f"{key}|real", lambda: fid_of(extractor, train[pick], real_stats))}
    x_T = x_T_for(pipe, args.n_samples, 0)
    for sampler in SAMPLERS if "rows" in args.what else ():
        for k in args.k:
            if k < SAMPLERS[sampler].order or k > T:
                continue
            out["rows"][f"{sampler}@{k}"] = {"nfe": SAMPLERS[sampler].nfe(k), "fid": cache.get(
                f"{key}|{sampler}|{k}", lambda s=sampler, k=k: fid_of(extractor, to_uint8(solve(pipe, x_T, s, k)),
                                                                    real_stats))}

    def seeded(sampler, k, seed):
        return cache.get(f"{key}|{sampler}|{k}|seed{seed}", lambda: fid_of(
            extractor, to_uint8(solve(pipe, x_T_for(pipe, args.n_samples, seed), sampler, k, seed=seed)), real_stats))
    # the yardstick: how much the FID of N samples moves with the sampling seed alone (seed 0 is the rows' x_T)
    if "spread" in args.what:
        out["spread"] = {f"{s}@{k}": [out["rows"][f"{s}@{k}"]["fid"]] + [seeded(s, k, i) for i in range(1, args.seeds)]
                         for s, k in args.spread_rows}
    if "T" in args.what:
        out["ancestral_T"] = [seeded("ancestral", T, i) for i in range(args.t_seeds)]
    if "diffusers" in args.what:
        out["diffusers"] = diffusers_part(args, pipe, x_T, extractor, real_stats, cache, key)
    return out


def diffusers_sample(pipe, x_T: torch.Tensor, steps: int) -> torch.Tensor:
    from diffusers import DPMSolverMultistepScheduler

    d = pipe.diffusion
    sch = DPMSolverMultistepScheduler(num_train_timesteps=d.num_timesteps, trained_betas=d.beta.cpu().numpy(),
                                      solver_order=2, prediction_type="epsilon", algorithm_type="dpmsolver++",
                                      final_sigmas_type="zero", lower_order_final=True)
    nodes = timestep_nodes(d.alpha_bar.cpu().double().numpy(), steps, "logsnr")
    sch.set_timesteps(timesteps=[int(t) for t in nodes[::-1]])
    x = x_T.clone()
    with torch.no_grad():
        for t in sch.timesteps:
            eps = pipe.model(x, torch.full((len(x),), int(t), device=x.device))
            x = sch.step(eps, t, x).prev_sample
    return x.clamp(-1, 1).cpu()


def diffusers_part(args, pipe, x_T, extractor, real_stats, cache: Cache, key: str) -> dict | None:
    try:
        import diffusers
    except ImportError:
        print("diffusers is not installed: the comparison with DPMSolverMultistepScheduler is skipped",
              file=sys.stderr)
        return None
    out = {"version": diffusers.__version__}
    for k in (10, 20):
        def measure(k=k):
            ours, theirs = solve(pipe, x_T, "dpm++2m", k, clip=False), diffusers_sample(pipe, x_T, k)
            return {"max_abs_diff": float((ours - theirs).abs().max()),
                    "max_uint8_diff": int(np.abs(to_uint8(ours).astype(int) - to_uint8(theirs)).max()),
                    "fid_ours": fid_of(extractor, to_uint8(ours), real_stats),
                    "fid_diffusers": fid_of(extractor, to_uint8(theirs), real_stats)}
        out[k] = cache.get(f"{key}|diffusers-dpm++2m-noclip|{k}", measure)
    return out


def fm_part(args, cache: Cache) -> dict:
    extra = {"model.ch": 32, "model.num_res_blocks": 1, "train.batch_size": 64}
    for item in args.set:
        k, _, v = item.partition("=")
        extra[k.strip()] = parse_value(v.strip())
    run = train_run(args, "fashion_mnist", "fashion_mnist", args.fm_steps, extra)
    pipe = ddpmkit.load(run, device=args.device)
    T = pipe.diffusion.num_timesteps
    key = f"fm|{weights_id(run)}"
    x_T = x_T_for(pipe, args.fm_rmse_n, 1)
    ref_path = args.out / f"fm_reference_{weights_id(run)}.pt"
    if not ref_path.exists():  # the converged ODE endpoint: dpm++3m on all T integer nodes
        torch.save(solve(pipe, x_T, "dpm++3m", T), ref_path)
    ref = torch.load(ref_path, weights_only=True)
    rmse = lambda x: float(((x - ref) * 127.5).pow(2).mean().sqrt())  # noqa: E731  on [0, 255]
    # how converged the reference is: another second-order solver at half the nodes, against it
    out = {"rmse": {}, "reference_check": cache.get(f"{key}|dpm++2m@{T // 2}-vs-ref",
                                                    lambda: rmse(solve(pipe, x_T, "dpm++2m", T // 2)))}
    for sampler in DETERMINISTIC if "rmse" in args.what else ():
        out["rmse"][sampler] = {SAMPLERS[sampler].nfe(k): cache.get(
            f"{key}|rmse|{sampler}|{k}|n{args.fm_rmse_n}", lambda s=sampler, k=k: rmse(solve(pipe, x_T, s, k)))
            for k in args.fm_k if SAMPLERS[sampler].order <= k <= T}
    extractor, clf_id = classifier(args, "fashion-mnist")
    real_stats = feature_stats(extractor(load_dataset("fashion-mnist", split="test").images)["features"])
    fkey = f"{key}|{clf_id}|n{args.n_samples}"
    x_F = x_T_for(pipe, args.n_samples, 0)
    rows = args.fm_rows or [*FM_FID_ROWS.items(), *FM_BASELINES.items()]
    out["fid"] = {f"{s}@{k}": {"nfe": SAMPLERS[s].nfe(k), "fid": cache.get(
        f"{fkey}|{s}|{k}", lambda s=s, k=k: fid_of(extractor, to_uint8(solve(pipe, x_F, s, k)), real_stats))}
        for s, k in rows}
    plot_rmse(out["rmse"], args.plot or args.out / "fm_rmse.png")
    return out


def plot_rmse(rmse: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for sampler, points in rmse.items():
        nfe = sorted(int(k) for k in points)
        ax.loglog(nfe, [points[k] if k in points else points[str(k)] for k in nfe], "o-", label=sampler)
    ax.set_xlabel("network evaluations (NFE)")
    ax.set_ylabel("RMSE to the ODE endpoint, [0, 255]")
    ax.set_title("Fashion-MNIST: distance to the converged ODE solution")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(result: dict) -> str:
    lines = []
    d = result.get("digits")
    if d:
        a = np.array(d.get("ancestral_T", []))
        lines.append(f"digits: ancestral, all T steps, seeds 0-{len(a) - 1}: FID {', '.join(f'{x:.2f}' for x in a)}; "
                     f"real train digits {d['real']:.2f}")
        for row, fids in d.get("spread", {}).items():
            lines.append(f"  seed spread of {row}, seeds 0-{len(fids) - 1}: {', '.join(f'{x:.2f}' for x in fids)} "
                         f"(sd {np.std(fids, ddof=1):.2f})")
        lines.append(f"{'sampler':<14}" + "".join(f"{f'K={k}':>14}" for k in DIGITS_K))
        for s in SAMPLERS:
            cells = [d["rows"].get(f"{s}@{k}") for k in DIGITS_K]
            lines.append(f"{s:<14}" + "".join(f"{c['fid']:>8.2f} ({c['nfe']:>3})" if c else f"{'-':>14}"
                                              for c in cells))
        lines.append("(FID, NFE in brackets; seed 0 for every row)")
        for k, c in (d.get("diffusers") or {}).items():
            if k != "version":
                lines.append(f"dpm++2m vs diffusers {d['diffusers']['version']} DPMSolverMultistep, {k} steps, no "
                             f"clipping: max |diff| {c['max_abs_diff']:.2e} ({c['max_uint8_diff']} in uint8); FID "
                             f"ours {c['fid_ours']:.2f}, diffusers {c['fid_diffusers']:.2f}")
    f = result.get("fashion_mnist")
    if f:
        lines.append(f"fashion-mnist RMSE [0, 255] to the ODE endpoint (dpm++3m on all T nodes; dpm++2m on T/2 "
                     f"nodes is {f['reference_check']:.3f} from it), by NFE:")
        for s, points in f["rmse"].items():
            lines.append(f"  {s:<10}" + "  ".join(f"{v:.3f} @{n}" for n, v in sorted(points.items(),
                                                                                key=lambda p: int(p[0]))))
        lines.append("fashion-mnist FID: " + ", ".join(f"{r} ({c['nfe']} NFE) {c['fid']:.2f}"
                                                       for r, c in f["fid"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_main, argv)


def _main(argv) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/out/solvers"))
    p.add_argument("--parts", default="digits,fashion-mnist", help="comma list of digits, fashion-mnist")
    p.add_argument("--digits-run", type=Path, help="a trained digits run (default: train one into --out/digits)")
    p.add_argument("--digits-steps", type=int, default=1500, help="steps if the digits run is trained here")
    p.add_argument("--fm-steps", type=int, default=3000, help="Fashion-MNIST training steps (the fixed budget)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Fashion-MNIST config values")
    p.add_argument("--n-samples", type=int, default=500, help="samples per FID (default 500)")
    p.add_argument("--seeds", type=int, default=5, help="sampling seeds of the spread at 20 and 100 steps")
    p.add_argument("--t-seeds", type=int, default=2, help="sampling seeds of the 1000-step ancestral rows")
    p.add_argument("--what", default="rows,spread,T,diffusers,rmse",
                   help="which of rows, spread, T, diffusers (digits), rmse (Fashion-MNIST)")
    p.add_argument("--fm-rows", default="", help="Fashion-MNIST FID rows, e.g. ancestral@100 (default: all)")
    p.add_argument("--spread", default="dpm++2m@20,ancestral@100", help="digits: rows whose seed spread to measure")
    p.add_argument("--fm-rmse-n", type=int, default=64, help="samples for the RMSE to the ODE endpoint")
    p.add_argument("--k", default=",".join(map(str, DIGITS_K)), help="digits: steps per sampler")
    p.add_argument("--fm-k", default=",".join(map(str, FM_K)), help="Fashion-MNIST: steps per solver for RMSE")
    p.add_argument("--plot", type=Path, help="where the RMSE plot goes (default --out/fm_rmse.png)")
    p.add_argument("--timesteps", type=int, help="override T (smoke tests only)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.k, args.fm_k = [int(x) for x in args.k.split(",")], [int(x) for x in args.fm_k.split(",")]
    args.what = set(args.what.split(","))
    args.spread_rows = [(r.split("@")[0], int(r.split("@")[1])) for r in args.spread.split(",") if r]
    args.fm_rows = [(r.split("@")[0], int(r.split("@")[1])) for r in args.fm_rows.split(",") if r]
    args.out.mkdir(parents=True, exist_ok=True)
    cache = Cache(args.out / "results.json")
    result = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__}
    parts = {x.strip() for x in args.parts.split(",")}
    if "digits" in parts:
        result["digits"] = digits_part(args, cache)
    if "fashion-mnist" in parts:
        result["fashion_mnist"] = fm_part(args, cache)
    (args.out / "summary.json").write_text(json.dumps(result, indent=1, default=float))
    print(report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
