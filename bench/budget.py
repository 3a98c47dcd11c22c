"""Training to a wall-clock budget: the sweep the planner's rule is fitted to, the step-77 diagnosis, and the
head-to-head against two peers at an equal budget.

    python bench/budget.py --part noise                                   # why step 77 samples noise (~1 min)
    python bench/budget.py --part probe --data fashion-mnist              # each candidate's step, bf16 and fp32
    python bench/budget.py --part sweep --data digits --minutes 2 --jobs 2          # the scaled-down sweep
    python bench/budget.py --part sweep --data fashion-mnist --minutes 4 --jobs 2 --variants plan,ch16x1,ch32x1,ch32x2
    python bench/budget.py --part peers --data fashion-mnist --minutes 15            # ddpmkit vs 2 peers, one run
    # full size (not run here): --part sweep with --minutes 5, 15 and 60 on both data sets

Every training process gets one thread (torch.set_num_threads(1), OMP_NUM_THREADS=1); run the script itself under
`nice -n 10` (its processes inherit it); the
cores may be shared with other work, so the load is printed. Samples: DDIM [Song et al. 2020] with 50 steps, eta 0,
n = --n (400), seed 0 (and 1 for ddpmkit, for the spread). Scores: in the features of a classifier trained on the
data set (`ddpm train-classifier`, cached in --out, as `ddpm eval --features`) against its test split: FID, k-NN
precision and recall, and the real-vs-real floor (--n real training images against the test reference, 3 seeds);
digits also get bench/digits_score.py's FD in its own classifier, as the quickstart's figures.

  sweep    one `Trainer` per variant, each planned for --minutes (train.budget_s) with one planner constant or
           config value changed (VARIANTS): width, batch, learning rate, warm-up share, LR decay, EMA, min-SNR.
  peers    three processes side by side for --minutes each: `ddpm train --minutes M` (its own plan),
           lucidrains' denoising-diffusion-pytorch with its defaults (Unet(dim=64) and dim_mults (1, 2, 4, 8),
           pred_v, sigmoid schedule; its Trainer's batch 16, Adam 1e-4 betas (0.9, 0.99), clip 1, EMA 0.995 every
           10 steps after 100), and diffusers' examples/unconditional_image_generation/train_unconditional.py
           recipe (UNet2DModel with blocks (128, 128, 256, 256, 512, 512), attention at the 5th level; DDPMScheduler
           linear, epsilon; batch 16, AdamW 1e-4 betas (0.95, 0.999) weight decay 1e-6, cosine schedule with 500
           warm-up steps over its 100 epochs, clip 1, EMAModel max 0.9999, inv_gamma 1, power 3/4). Both peers
           need sizes divisible by their downsampling (8 and 32), so images are padded up to that with background
           (-1) and their samples cropped back (28x28 -> 32x32 for both; 8x8 digits stay 8x8 for lucidrains and
           become 32x32 for diffusers); they train on one channel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# name -> (planner constants, config values the planner keeps)
WIDTHS = {"ch16x1": (16, 1), "ch32x1": (32, 1), "ch32x2": (32, 2), "ch64x2": (64, 2)}
VARIANTS = {
    "plan": ({}, {}),
    **{name: ({}, {"model.ch": ch, "model.num_res_blocks": nrb}) for name, (ch, nrb) in WIDTHS.items()},
    "batch16": ({"BATCH": 16}, {}), "batch32": ({"BATCH": 32}, {}), "batch128": ({"BATCH": 128}, {}),
    "lr5e-4": ({"LR": 5e-4}, {}), "lr2e-3": ({"LR": 2e-3}, {}),
    "warmup0.01": ({"WARMUP_FRAC": 0.01}, {}), "warmup0.2": ({"WARMUP_FRAC": 0.2}, {}),
    "lr_constant": ({}, {"train.lr_decay": "none"}),
    "ema_power0.05": ({"EMA_SIGMA_REL": 0.05}, {}), "ema_power0.2": ({"EMA_SIGMA_REL": 0.2}, {}),
    "ema_exp0.999": ({}, {"train.ema_schedule": "exponential", "train.ema_decay": 0.999}),
    "min_snr5": ({}, {"train.loss_weighting": "min_snr"}),
    "l_simple": ({"WEIGHTING": "none"}, {}),
    "v_pred": ({}, {"diffusion.parameterization": "v"}),
    "v_pred_min_snr5": ({}, {"diffusion.parameterization": "v", "train.loss_weighting": "min_snr"}),
    "constant_min_snr5": ({}, {"train.lr_decay": "none", "train.loss_weighting": "min_snr"}),
}


def env1() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run(cmd: list[str], log: Path) -> None:
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env1(), check=True)  # niced with this script


def ddpm(*args: str) -> list[str]:
    return [sys.executable, "-m", "ddpmkit.cli", *args]


# ---- scoring -----------------------------------------------------------------------------------------------------

_CLASSIFIER_LOCK = threading.Lock()  # the sweep's threads score at once: train the classifier once


def classifier(out: Path, data: str = "fashion-mnist") -> Path:
    path = out / ("fashion_classifier.safetensors" if data == "fashion-mnist" else f"{data}_classifier.safetensors")
    with _CLASSIFIER_LOCK:
        if not path.is_file():
            run(ddpm("train-classifier", "--data", data, "--out", str(path), "--no-progress"), out / "classifier.log")
    return path


def score(npz: Path, data: str, out: Path) -> dict:
    """FID, precision and recall in the features of a classifier trained on `data` (`ddpm train-classifier`),
    against the test split; digits also get bench/digits_score.py's FD (its own classifier) and confidence."""
    from ddpmkit.evaluate.run import EvalRequest, evaluate

    samples = np.load(npz)["arr_0"]
    ev = evaluate(EvalRequest(data=data, samples=npz, split="test", metrics=("fid", "pr"),
                              features=classifier(out, data), n=len(samples), progress=False))
    row = {"fid": ev["fid"], "precision": ev["precision"], "recall": ev["recall"]}
    if data == "digits":
        from digits_score import score as digits_score

        s = digits_score(samples)
        row.update({"fd": s["fd"], "fd_floor": s["fd_floor"], "confidence": s["confidence"], "classes": s["classes"]})
    return row


def real_floor(data: str, n: int, out: Path) -> list[dict]:
    """Real training images scored as samples (3 seeds): the metric's floor and its spread at this n."""
    from ddpmkit.data import load_dataset

    images = load_dataset(data, split="train").images
    rows = []
    for seed in (1, 2, 3):
        path = out / f"real_{seed}.npz"
        np.savez(path, images[np.random.default_rng(seed).permutation(len(images))[:n]])
        rows.append(score(path, data, out))
    return rows


def sample_ddpmkit(run_dir: Path, n: int, seed: int, log: Path) -> Path:
    npz = run_dir / f"ddim50_seed{seed}.npz"
    if npz.is_file():  # a re-run of the sweep scores what is there
        return npz
    run(ddpm("sample", str(run_dir), "--sampler", "ddim", "--steps", "50", "--n", str(n), "--seed", str(seed),
             "--npz", str(npz), "--out", str(run_dir / f"ddim50_seed{seed}.png"), "--no-progress"), log)
    return npz


# ---- the sweep ---------------------------------------------------------------------------------------------------

def train_one(args) -> int:
    """One planned run in this process with a variant's planner constants and fixed config values."""
    from ddpmkit.config import load_config
    from ddpmkit.train import budget
    from ddpmkit.train.autoconfig import choose_config
    from ddpmkit.train.trainer import Trainer

    started = time.monotonic()
    torch.set_num_threads(1)
    constants, values = VARIANTS[args.variant]
    size = {"digits": 8, "fashion-mnist": 28}[args.data]
    if args.variant in WIDTHS:  # the planner's candidate of that name, whole (levels, attention, dropout)
        values = next(c.model for c in budget.candidates(size) if c.name == args.variant)
    for name, value in constants.items():
        setattr(budget, name, value)
    if args.steps:  # equal steps: the planner's recipe for `steps` steps, on its smallest network unless a width
        steps = int(args.steps * args.step_ratio)
        batch = {"train.batch_size": budget.BATCH}
        recipe = {**budget.candidates(size)[0].model, **budget._recipe(steps, 1), **batch, "train.steps": steps}
        config = load_config("digits" if args.data == "digits" else "fashion_mnist")
        config = config.with_values({**recipe, **values})
        result = Trainer(config, args.out, progress=False).run()
        (args.out / "result.json").write_text(json.dumps({"step": result["step"], "elapsed_s": 0, "budget_s": 0}))
        return 0
    config = choose_config(args.data, image_size=None, channels=None)[0] if args.data != "digits" else \
        load_config("digits")
    config = config.with_values({**values, "train.budget_s": args.minutes * 60.0})
    result = Trainer(config, args.out, progress=False, started=started, fixed=set(values)).run()
    (args.out / "result.json").write_text(json.dumps({k: str(v) if isinstance(v, Path) else v
                                                      for k, v in result.items()}))
    return 0


def step_ratios(data: str, widths: list[str]) -> dict[str, float]:
    """Steps each width (or batch) variant gets in the time the planner's smallest network at its batch takes for
    one: the probes' time ratio, so that those variants compare at equal time."""
    from ddpmkit.config import load_config
    from ddpmkit.data import load_dataset
    from ddpmkit.train import budget

    torch.set_num_threads(1)
    images = load_dataset(data, split="train")
    size = images.image_size
    config = load_config("digits" if data == "digits" else "fashion_mnist").with_values(budget._recipe(100))
    cands = {c.name: c for c in budget.candidates(size)}

    def values(name: str) -> dict:
        if name in cands:
            return cands[name].model
        return {**cands["ch16x1"].model, "train.batch_size": VARIANTS[name][0]["BATCH"]}

    def cpu_s(name: str) -> float:  # CPU seconds of a probe (build, 9 steps, one forward): steady under load
        start = time.process_time()
        budget.probe(config.with_values(values(name)), images, torch.device("cpu"), 8)
        return time.process_time() - start

    cpu_s("ch16x1")  # the first probe of a process pays one-time costs (allocator, kernels): not counted
    times = {name: cpu_s(name) for name in dict.fromkeys(["ch16x1", *widths])}
    print("probe, CPU s for 9 steps (batch", config.train.batch_size, "unless named):",
          ", ".join(f"{k} {v:.2f}" for k, v in times.items()), flush=True)
    return {name: times["ch16x1"] / t for name, t in times.items()}


def sweep(args) -> int:
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    base = args.out / (f"sweep_{args.data}_{args.steps}steps" if args.steps else f"sweep_{args.data}_{args.minutes:g}min")
    timed = [n for n in names if n in WIDTHS or n.startswith("batch")]
    ratios = step_ratios(args.data, timed) if args.steps else {}
    base.mkdir(parents=True, exist_ok=True)

    def one(name: str) -> dict:
        out = base / name
        if not (out / "result.json").is_file():
            ratio = ratios.get(name, 1.0)
            run([sys.executable, __file__, "--part", "train-one", "--variant", name, "--data", args.data,
                 "--minutes", str(args.minutes), "--out", str(out), "--steps", str(args.steps), "--step-ratio",
                 str(ratio)], base / f"{name}.log")
        result = json.loads((out / "result.json").read_text())
        cfg = (out / "config.toml").read_text()
        s = score(sample_ddpmkit(out, args.n, 0, base / f"{name}.log"), args.data, args.out)
        return {"variant": name, "steps": result["step"], "elapsed_s": result["elapsed_s"],
                "budget_s": result["budget_s"], **s, "config": cfg}

    print(f"sweep {args.data}, {args.minutes:g} min per variant, {args.jobs} at a time; load "
          f"{os.getloadavg()[0]:.2f}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(one, names))
    if args.data != "digits":
        floor = real_floor(args.data, args.n, args.out)
        print("real-vs-real floor:", ", ".join(f"fid {r['fid']:.2f}" for r in floor))
    for r in rows:
        metric = " ".join(f"{k} {r[k]:.3f}" for k in ("fd", "fid", "precision", "recall", "confidence") if k in r)
        print(f"{r['variant']:<14} {r['steps']:>6} steps  end {r['elapsed_s']:.0f}/{r['budget_s']:.0f} s  {metric}",
              flush=True)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    (base / "sweep.json").write_text(json.dumps(rows, indent=1))
    return 0


# ---- the step-77 diagnosis ---------------------------------------------------------------------------------------

def noise(args) -> int:
    """The fashion_mnist preset's recipe at step 77: computed, then trained for 77 steps on digits three ways."""
    from ddpmkit.config import load_config
    from ddpmkit.store import readiness
    from ddpmkit.train.lr_schedule import lr_integral
    from ddpmkit.train.trainer import Trainer

    preset = load_config("fashion_mnist").train
    print(f"fashion_mnist preset: lr {preset.lr:g}, warm-up {preset.warmup}, EMA {preset.ema_decay} "
          f"(warm-up {preset.ema_warmup})")
    for step in (77, 1000, 5000):
        print(f"  step {step}: full-LR steps {lr_integral(step, preset):.1f}; EMA share of the initial weights: "
              f"{readiness.ema_initial_share(preset, step):.3g} as configured, "
              f"{readiness.ema_initial_share(preset.__class__(**{**preset.__dict__, 'ema_warmup': False}), step):.3g}"
              f" without the EMA warm-up")
    torch.set_num_threads(1)
    cases = {"preset recipe (warm-up 1000, EMA 0.9995 with warm-up)": {},
             "no LR warm-up": {"train.warmup": 0},
             "EMA 0.9995 without its warm-up": {"train.ema_warmup": False},
             "no LR warm-up, EMA without warm-up": {"train.warmup": 0, "train.ema_warmup": False}}
    base = load_config("digits").with_values({"train.lr": preset.lr, "train.warmup": preset.warmup,
                                              "train.ema_decay": preset.ema_decay, "train.steps": args.noise_steps,
                                              "train.sample_every": 0})
    for i, (name, values) in enumerate(cases.items()):
        out = args.out / f"noise_{i}"
        shutil.rmtree(out, ignore_errors=True)
        Trainer(base.with_values(values), out, progress=False, force=True).run()
        s = score(sample_ddpmkit(out, args.n, 0, args.out / "noise.log"), "digits", args.out)
        print(f"  {name}: digits at step {args.noise_steps}: fd {s['fd']:.2f} (real floor {s['fd_floor']:.2f}), "
              f"confidence {s['confidence']:.2f}", flush=True)
    return 0


# ---- the candidates' step times, bf16 against fp32 ------------------------------------------------------------------

def probe_all(args) -> int:
    """The planner's probe (train/budget.py) of every candidate in bf16 autocast and in fp32, one thread: what a
    step and a sample grid cost here, and where bf16 pays."""
    from ddpmkit.config import load_config
    from ddpmkit.data import load_dataset
    from ddpmkit.train import budget

    torch.set_num_threads(1)
    data = load_dataset(args.data, split="train")
    config = load_config("digits" if args.data == "digits" else "fashion_mnist").with_values(budget._recipe(1000))
    print(f"{args.data}, batch {budget.BATCH}, one thread; load {os.getloadavg()[0]:.2f}", flush=True)
    for cand in budget.candidates(data.image_size):
        t = {prec: budget.probe(config.with_values({**cand.model, "train.precision": prec}), data,
                                torch.device("cpu"), 4) for prec in ("fp32", "bf16")}
        print(f"{cand.name:<7} {t['bf16'].params:>10,} params  s/step fp32 {t['fp32'].step_s:.3f} bf16 "
              f"{t['bf16'].step_s:.3f} (x{t['fp32'].step_s / t['bf16'].step_s:.2f})  grid s fp32 {t['fp32'].grid_s:.1f}"
              f" bf16 {t['bf16'].grid_s:.1f}", flush=True)
    return 0


# ---- the head-to-head --------------------------------------------------------------------------------------------

def peers(args) -> int:
    from peers_budget import PEER_NAMES

    base = args.out / f"peers_{args.data}_{args.minutes:g}min"
    base.mkdir(parents=True, exist_ok=True)
    print(f"side by side, {args.minutes:g} min each, one thread each; load {os.getloadavg()[0]:.2f}; "
          f"{time.strftime('%H:%M:%S %Z')}", flush=True)
    ours = base / "ddpmkit"
    jobs = {"ddpmkit": ddpm("train", "--data", args.data, "--out", str(ours), "--minutes", str(args.minutes),
                            "--no-progress")}
    for name in PEER_NAMES:
        jobs[name] = [sys.executable, str(HERE / "peers_budget.py"), "--peer", name, "--data", args.data, "--minutes",
                      str(args.minutes), "--n", str(args.n), "--out", str(base / name), "--sample-minutes",
                      str(args.sample_minutes)]
    start = time.monotonic()
    with ThreadPoolExecutor(len(jobs)) as pool:
        if not args.score_only:  # --score-only: score what the peers left (after a --sample-only re-run)
            list(pool.map(lambda kv: run(kv[1], base / f"{kv[0]}.log"), jobs.items()))
    print(f"all trained and sampled after {time.monotonic() - start:.0f} s; load {os.getloadavg()[0]:.2f}", flush=True)
    rows = {}
    for seed in (0, 1):
        npz = ours / f"ddim50_seed{seed}.npz"
        npz = npz if npz.is_file() else sample_ddpmkit(ours, args.n, seed, base / "ddpmkit.log")
        rows[f"ddpmkit seed {seed}"] = {"n": args.n, **score(npz, args.data, args.out)}
    for name in PEER_NAMES:  # a peer whose sampling was cut short is scored at its n, and ddpmkit at that n too
        full = base / name / "ddim50_seed0.npz"
        npz = full if full.is_file() else base / name / "ddim50_seed0_partial.npz"
        n = len(np.load(npz)["arr_0"])
        rows[name] = {"n": n, **score(npz, args.data, args.out)}
        if n < args.n:
            part = base / f"ddpmkit_first{n}.npz"
            np.savez(part, np.load(ours / "ddim50_seed0.npz")["arr_0"][:n])
            rows[f"ddpmkit seed 0, first {n}"] = {"n": n, **score(part, args.data, args.out)}
    floor = real_floor(args.data, args.n, args.out)
    for name, r in rows.items():
        print(f"{name:<26} " + " ".join(f"{k} {v:.3f}" for k, v in r.items()))
    print("real-vs-real floor: " + "; ".join(" ".join(f"{k} {v:.3f}" for k, v in r.items()) for r in floor))
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    (base / "peers.json").write_text(json.dumps({"rows": rows, "floor": floor}, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", required=True, choices=("noise", "sweep", "peers", "train-one", "probe"))
    p.add_argument("--data", default="digits")
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--variants", default="", help=f"comma-separated from {', '.join(VARIANTS)}")
    p.add_argument("--variant", default="plan")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--noise-steps", type=int, default=77)
    p.add_argument("--steps", type=int, default=0,
                   help="sweep at equal steps (widths at equal time: steps times the probe's time ratio) instead "
                        "of --minutes of wall clock (a shared CPU's load changes the minutes, not the steps)")
    p.add_argument("--step-ratio", type=float, default=1.0)
    p.add_argument("--score-only", action="store_true", help="peers: score the samples already there")
    p.add_argument("--sample-minutes", type=float, default=25.0,
                   help="peers: stop sampling after this many minutes, keeping each full batch of 100")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "budget")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return {"noise": noise, "sweep": sweep, "peers": peers, "train-one": train_one, "probe": probe_all}[args.part](args)


if __name__ == "__main__":
    sys.exit(main())
