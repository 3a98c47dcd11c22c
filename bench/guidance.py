"""Classifier-free guidance on small data: a conditional run against an unconditional one at the same budget [CFG].

    python bench/guidance.py --steps 1500 --n-samples 500 --out bench/out/guidance --threads 1

Two runs of the library's Trainer with the data's preset, the same steps, batch and seed: "uncond" (the preset as
is) and "cond" (ddpm train --conditional: model.num_classes from the labels, label dropout 0.1 [CFG Sec. 4]). For
each guidance weight w of --guidance the conditional model draws --n-samples samples (EMA weights, the classes in
the training data's proportions, seed 0, the same respaced ancestral sampler and --sample-steps for every row),
and the script measures [CFG Sec. 4.1, Fig. 4 and Table 1 show the trade-off on ImageNet]:
    acc        the share of samples that the classifier assigns to the class they were drawn for
    FID        against the test split, in that classifier's feature space (as bench/improved.py measures it)
    precision  and recall, k = 3 [Kynkaanniemi et al. 2019], in the same feature space
The unconditional run gives one more FID row (w does not apply), and "real" the FID of n real training images: the
floor at this n. The classifier is bench/improved.py's (trained on the train split, held out on the test split):
its features define FID here, so figures compare only within this script's output.

A rerun with the same --out reuses finished runs (and resumes unfinished ones), the classifier, and the figures in
--out/results.json measured with the same settings. It prints a table, writes results.json and guidance.png.
--timesteps overrides T, for smoke tests only.
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
from ddpmkit.evaluate.fid import feature_stats
from ddpmkit.evaluate.precision_recall import precision_recall
from ddpmkit.train.trainer import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from improved import classifier, fid_of, one_line_errors  # noqa: E402  (the same classifier file and FID as bench/improved.py)

PRESETS = {"digits": "digits", "fashion-mnist": "fashion_mnist"}
RUNS = {"uncond": False, "cond": True}  # name -> ddpm train --conditional


def train(args, name: str) -> dict:
    """Train (or resume, or reuse) one run; its wall time over this call."""
    values = {"train.steps": args.steps, "train.checkpoint_every": max(1, args.steps // 5),
              "train.sample_every": args.steps, "train.num_samples": 20}
    if args.timesteps:
        values.update({"diffusion.timesteps": args.timesteps, "sample.steps": min(args.timesteps, 100)})
    config = load_config(PRESETS[args.data]).with_values(values, source="bench/guidance.py")
    t0 = time.perf_counter()
    Trainer(config, args.out / name, resume=True, progress=not args.no_progress, conditional=RUNS[name]).run()
    return {"steps": args.steps, "seconds_this_call": time.perf_counter() - t0}


def measure(args, pipe, extractor, real, guidance: float | None) -> dict:
    """acc (conditional only), FID, precision and recall of --n-samples samples."""
    t0 = time.perf_counter()
    kwargs = {} if guidance is None else {"guidance": guidance}  # None: an unconditional run
    images = pipe.sample(args.n_samples, steps=args.sample_steps, seed=0, batch_size=args.n_samples, **kwargs)
    out = extractor(images)
    row = {"fid": fid_of(extractor, images, real["stats"]), "seconds": None}
    pr = precision_recall(real["features"], out["features"], k=3)
    row.update({"precision": float(pr["precision"]), "recall": float(pr["recall"])})
    if guidance is not None:
        labels = pipe.labels(args.n_samples, None, seed=0)  # what sample() drew: the data's proportions
        row["acc"] = float((out["logits"].argmax(1) == labels).mean())
    row["seconds"] = time.perf_counter() - t0
    return row


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = sorted(float(w) for w in result["cond"])
    rows = [result["cond"][f"{w:g}"] for w in ws]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    ax1.plot(ws, [r["fid"] for r in rows], "o-", label="conditional, guided")
    ax1.axhline(result["uncond"]["fid"], color="gray", ls="--", label="unconditional")
    ax1.axhline(result["real"]["fid"], color="green", ls=":", label=f"real (n = {result['real']['n']})")
    ax1.set_xlabel("guidance w")
    ax1.set_ylabel("FID (classifier features)")
    ax1.legend(fontsize=8)
    ax2.plot(ws, [r["acc"] for r in rows], "o-", label="accuracy")
    ax2.plot(ws, [r["precision"] for r in rows], "s-", label="precision")
    ax2.plot(ws, [r["recall"] for r in rows], "^-", label="recall")
    ax2.set_xlabel("guidance w")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def table(result: dict) -> str:
    lines = [f"{'row':<14}{'acc':>8}{'FID':>9}{'prec':>8}{'recall':>8}", "-" * 47]
    for w, r in sorted(result["cond"].items(), key=lambda kv: float(kv[0])):
        lines.append(f"{'cond w=' + w:<14}{r['acc']:>8.3f}{r['fid']:>9.3f}{r['precision']:>8.3f}{r['recall']:>8.3f}")
    u = result["uncond"]
    lines.append(f"{'uncond':<14}{'-':>8}{u['fid']:>9.3f}{u['precision']:>8.3f}{u['recall']:>8.3f}")
    lines.append(f"{'real':<14}{'-':>8}{result['real']['fid']:>9.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return one_line_errors(_main, argv)


def _main(argv: list[str] | None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", choices=sorted(PRESETS), default="digits")
    p.add_argument("--steps", type=int, default=1500, help="training steps of each run (default 1500, digits')")
    p.add_argument("--n-samples", type=int, default=500, help="samples per row (default 500)")
    p.add_argument("--sample-steps", type=int, default=100, help="respaced ancestral steps (default 100)")
    p.add_argument("--guidance", default="0,0.5,1,2,4", help="guidance weights w (default 0,0.5,1,2,4)")
    p.add_argument("--out", type=Path, default=Path("bench/out/guidance"))
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--timesteps", type=int, default=None, help="override T (smoke tests only)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"data": args.data, "steps": args.steps, "n": args.n_samples, "sample_steps": args.sample_steps,
                "timesteps": args.timesteps}
    old = json.loads((args.out / "results.json").read_text()) if (args.out / "results.json").exists() else {}
    old = old if old.get("settings") == settings else {}
    result = {"settings": settings, "runs": {name: train(args, name) for name in RUNS}, "cond": {}}
    pipes = {name: ddpmkit.load(args.out / name) for name in RUNS}
    test, train_set = load_dataset(args.data, split="test"), load_dataset(args.data, split="train")
    extractor = classifier(args, train_set)
    feats = extractor(test.images)["features"]
    real = {"features": feats, "stats": feature_stats(feats)}
    for w in (float(x) for x in args.guidance.split(",")):
        key = f"{w:g}"
        result["cond"][key] = old.get("cond", {}).get(key) or measure(args, pipes["cond"], extractor, real, w)
        print(f"cond w={key}: {json.dumps(result['cond'][key])}", file=sys.stderr)
    result["uncond"] = old.get("uncond") or measure(args, pipes["uncond"], extractor, real, None)
    pick = np.random.default_rng(0).permutation(len(train_set))[: args.n_samples]
    result["real"] = {"fid": fid_of(extractor, train_set.images[pick], real["stats"]), "n": len(pick)}
    result["feature_space"] = extractor.description
    (args.out / "results.json").write_text(json.dumps(result, indent=2, default=float))
    plot(result, args.out / "guidance.png")
    print(table(result))
    print(f"\n{args.steps} training steps per run; {args.n_samples} samples per row, {args.sample_steps} respaced "
          f"ancestral steps, seed 0; classes in the training data's proportions\n{extractor.description}\n"
          f"written: {args.out / 'results.json'}, {args.out / 'guidance.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
