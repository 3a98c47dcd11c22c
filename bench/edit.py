"""Image editing on a trained run: Fig. 7, RePaint inpainting of held-out images, and the ODE round trip.

    python bench/edit.py --run bench/out/digits --classifier bench/out/digits_classifier.safetensors \
        --data digits --n-images 50 --inpaint-steps 100 --out bench/out/edit --figures docs --threads 1

1. Fig. 7 [DDPM Sec. 4.3]: `ddpm reconstruct` on test images 0 and 1 at t = 100, 250, 500, 750, 1000, 4 samples
   each (ancestral from t), written to --figures/fig7_<data>.png.
2. Inpainting [RePaint]: the first --n-images test images with the top, bottom, left and center masks, at R = 1, 5,
   10 (jump J = 10, --inpaint-steps respaced reverse steps), one inpainting each. For each: the probability that
   the data set's classifier gives the true class (mean over images), its accuracy, and the RMSE of the filled
   pixels on 0-255, against filling them with the per-pixel mean of the training split; also the unmasked images.
3. Encode/decode [DDIM inversion]: the same images encoded with dpm++2m and ddim at K steps and decoded back:
   round-trip RMSE and max error on 0-255, and seconds for each direction.
Prints every number it measures and writes results.json into --out.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import ddpmkit
from ddpmkit.cli import main as ddpm
from ddpmkit.data import from_model_range, load_dataset
from ddpmkit.edit import decode, encode, inpaint, named_mask, round_trip_error
from ddpmkit.evaluate.classifier import load_classifier


def classify(clf, images: np.ndarray, labels: np.ndarray) -> dict:
    logits = clf(images)["logits"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return {"p_true": float(p[np.arange(len(labels)), labels].mean()),
            "accuracy": float((p.argmax(1) == labels).mean())}


def masked_rmse(images: np.ndarray, filled: np.ndarray, keep: np.ndarray) -> float:
    hole = ~keep
    diff = filled.astype(np.float64)[:, hole] - images.astype(np.float64)[:, hole]
    return float(np.sqrt((diff**2).mean()))


def fig7(args) -> None:
    out = Path(args.figures) / f"fig7_{args.data}.png"
    ddpm(["reconstruct", args.run, "--image", "0,1", "--data", args.data, "--t", "100,250,500,750,1000", "--n", "4",
          "--out", str(out), "--no-progress"])


def inpainting(args, pipe, clf, images, labels, mean_image) -> dict:
    rows = {"unmasked": classify(clf, images, labels)}
    print(f"unmasked test images: {rows['unmasked']}", flush=True)
    for mask in ("top", "bottom", "left", "center"):
        keep = named_mask(mask, pipe.image_size)
        mean_fill = np.where(keep[None, :, :, None], images, mean_image[None])
        rows[f"{mask} mean-fill"] = {**classify(clf, mean_fill, labels), "rmse": masked_rmse(images, mean_fill, keep)}
        print(f"{mask} data-mean fill: {rows[f'{mask} mean-fill']}", flush=True)
        for r in (1, 5, 10):
            start = time.perf_counter()
            x = inpaint(pipe, images, keep, 1, resample=r, jump=10, steps=args.inpaint_steps, seed=0)[:, 0]
            filled = from_model_range(torch.from_numpy(x)).numpy()
            assert (filled[:, keep] == images[:, keep]).all()
            row = {**classify(clf, filled, labels), "rmse": masked_rmse(images, filled, keep),
                   "seconds": time.perf_counter() - start}
            rows[f"{mask} R={r}"] = row
            print(f"{mask} RePaint R = {r}: {row}", flush=True)
    return rows


def round_trips(args, pipe, images) -> dict:
    rows = {}
    for sampler in ("dpm++2m", "ddim"):
        for k in (5, 10, 20, 50, 100):
            start = time.perf_counter()
            latents = encode(pipe, images, sampler=sampler, steps=k)
            mid = time.perf_counter()
            back = decode(pipe, latents, sampler=sampler, steps=k)
            end = time.perf_counter()
            row = {**round_trip_error(images, back), "encode_s": mid - start, "decode_s": end - mid,
                   "latent_std": float(latents.std())}
            rows[f"{sampler} K={k}"] = row
            print(f"round trip {sampler} K = {k}: {row}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--classifier", required=True)
    p.add_argument("--data", default="digits")
    p.add_argument("--n-images", type=int, default=50)
    p.add_argument("--inpaint-steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=Path("bench/out/edit"))
    p.add_argument("--figures", default="docs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip", default="", help="comma list of parts to skip: fig7, inpaint, encode")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pipe, clf = ddpmkit.load(args.run), load_classifier(Path(args.classifier))
    test = load_dataset(args.data, split="test")
    images, labels = test.images[: args.n_images], test.labels[: args.n_images]
    mean_image = np.rint(load_dataset(args.data, split="train").images.astype(np.float64).mean(0)).astype(np.uint8)
    print(f"run {args.run} (step {pipe.step}), {len(images)} test images of {args.data}, threads {args.threads}")
    results = {"run": args.run, "step": pipe.step, "n_images": len(images), "inpaint_steps": args.inpaint_steps}
    skip = set(args.skip.split(","))
    if "fig7" not in skip:
        fig7(args)
    if "encode" not in skip:
        results["round_trip"] = round_trips(args, pipe, images)
    if "inpaint" not in skip:
        results["inpainting"] = inpainting(args, pipe, clf, images, labels, mean_image)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"wrote {args.out / 'results.json'}")


if __name__ == "__main__":
    main()
