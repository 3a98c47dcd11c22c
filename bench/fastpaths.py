"""Do the trainer's fast settings cost quality? The same digits run with and without them, against seed noise.

    python bench/fastpaths.py --steps 2000 --threads 1          # about 45 min on one core

Runs of the library's Trainer on the built-in digits (the `digits` preset and config, --steps steps):
    fp32          the default CPU path (fp32, contiguous, eager; fused Adam)             seed 0
    fp32_seed1    the same with seed 1: how far two equally good runs differ (the noise)  seed 1
    <variant>     seed 0 with a fast setting of --variants, by default
                  channels_last+compile: `train.channels_last = true` and `train.compile = true` together
bf16 is left out by default: this CPU has no bf16 dot products, so it is many times slower here (bench/throughput.py),
and 2000 steps of it would take hours; pass --variants bf16 to run it anyway.

For each run: the mean training loss over the last quarter of the steps, the largest gap between its logged loss
curve and fp32's (per train.log_every interval), and the FID of --n-samples samples (EMA weights, 100 respaced
steps, seed 0) in the feature space of a small classifier trained on the digits' train split, against the test
split (ddpmkit.evaluate, as `ddpm eval --features` does). A fast setting "matches within noise" when its gaps to fp32
are no larger than fp32_seed1's. The loss curves are drawn in --out/loss_curves.png, the figures written to
--out/results.json. A rerun with the same --out reuses finished runs and the classifier.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import ddpmkit
from ddpmkit.config import load_config
from ddpmkit.data import load_dataset
from ddpmkit.errors import UserError
from ddpmkit.evaluate.fid import feature_stats
from ddpmkit.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from improved import classifier, fid_of, one_line_errors  # noqa: E402  (same classifier file and FID as bench/improved.py)

SETTINGS = {"channels_last": {"train.channels_last": True}, "compile": {"train.compile": True},
            "bf16": {"train.precision": "bf16"}}


def variant_values(name: str) -> dict:
    values = {}
    for part in name.split("+"):
        if part not in SETTINGS:
            raise UserError(f"--variants: unknown setting {part!r}; choose from {', '.join(SETTINGS)} "
                            "(join several with +)")
        values.update(SETTINGS[part])
    return values


def train(args, name: str, values: dict) -> dict:
    config = load_config("digits").with_values({"train.steps": args.steps, "train.checkpoint_every": args.steps,
                                                "train.sample_every": args.steps, "train.precision": "fp32",
                                                **values}, source="bench/fastpaths.py")
    run_dir = args.out / name
    timing = run_dir / "bench_train_seconds.json"
    t0 = time.perf_counter()
    Trainer(config, run_dir, resume=True, device="cpu", progress=not args.no_progress).run()
    if not timing.exists():
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"values": values, "steps": [r["step"] for r in rows], "loss": [r["loss"] for r in rows],
            "train_seconds": json.loads(timing.read_text())["seconds"]}


def loss_figures(run: dict, base: dict, steps: int) -> dict:
    s, loss, base_loss = np.array(run["steps"]), np.array(run["loss"]), np.array(base["loss"])
    if len(loss) != len(base_loss):
        raise UserError("--out: its runs were logged at different steps (another --steps?); use a fresh --out")
    last = s > 0.75 * steps
    return {"final_loss": float(loss[last].mean()), "max_gap": float(np.abs(loss - base_loss).max()),
            "final_gap": float(abs(loss[last].mean() - base_loss[last].mean()))}


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, run in runs.items():
        ax.plot(run["steps"], run["loss"], label=name, lw=1)
    ax.set(xlabel="step", ylabel="L_simple (mean per log interval)", yscale="log", title="digits: fast settings")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--variants", default="channels_last+compile", help="comma-separated; join settings with +")
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--out", type=Path, default=Path("bench/out/fastpaths"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = {"fp32": {}, "fp32_seed1": {"train.seed": 1}}
    plan.update({v: variant_values(v) for v in args.variants.split(",") if v})
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {name: train(args, name, values) for name, values in plan.items()}
    plot(runs, args.out / "loss_curves.png")

    extractor = classifier(args, load_dataset("digits", split="train"))
    real = feature_stats(extractor(load_dataset("digits", split="test").images)["features"])
    for name, run in runs.items():
        images = ddpmkit.load(args.out / name, device="cpu").sample(args.n_samples, steps=100, seed=0, batch_size=500)
        run["fid"] = fid_of(extractor, images, real)
        run.update(loss_figures(run, runs["fp32"], args.steps))
    head = f"{'run':<26}{'train s':>9}{'loss, last 25%':>16}{'max gap':>10}{'final gap':>11}{'FID@100':>9}"
    lines = [head, "-" * len(head)]
    for name, run in runs.items():
        lines.append(f"{name:<26}{run['train_seconds']:>9.0f}{run['final_loss']:>16.5f}{run['max_gap']:>10.1e}"
                     f"{run['final_gap']:>11.1e}{run['fid']:>9.3f}")
    result = {"runs": runs, "torch": torch.__version__, "threads": torch.get_num_threads(), "steps": args.steps,
              "n_samples": args.n_samples, "feature_space": extractor.description}
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    print("\n".join(lines))
    print(f"(gaps: |loss - fp32's loss|; fp32_seed1's gaps are the noise)\n{extractor.description}\n"
          f"written: {args.out / 'results.json'}, {args.out / 'loss_curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
