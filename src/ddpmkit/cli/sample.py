"""`ddpm sample`: images from a trained run, as a grid PNG and an .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import add_class_options, add_sampler_options


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained run (DPM-Solver++ by default; Algorithm 2, DDIM, Heun)")
    p.add_argument("run_dir", type=Path, help="a run directory (newest valid checkpoint) or a checkpoint folder")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder to use instead of the newest")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, help="grid PNG to write (default RUN_DIR/sample_grid.png)")
    p.add_argument("--npz", type=Path, help="also write uint8 (N, H, W, C) under key arr_0 (the ADM format)")
    add_sampler_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-ema", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    add_class_options(p)
    p.add_argument("--per-class", type=int, metavar="K",
                   help="conditional run: K samples of each class (or of each --class), one labelled row per class")


def cmd_sample(args) -> int:
    from ..figures.grid import save_grid
    from ..pipeline import load

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    pipe = load(args.checkpoint or args.run_dir, ema=not args.no_ema,
                device=None if args.device == "auto" else args.device,
                precision=args.precision)
    sampler, steps, _, spacing = pipe.sampler_settings(args.sampler, args.steps, args.eta, args.spacing)
    labels, guidance = _sample_labels(args, pipe)
    n = args.n if labels is None else len(labels)
    images = pipe.sample(n, sampler=sampler, steps=steps, eta=args.eta, spacing=spacing, seed=args.seed,
                         batch_size=args.batch_size, progress=not args.no_progress, classes=labels, guidance=guidance)
    out = args.out or (args.run_dir / "sample_grid.png")
    if args.per_class is not None:
        from ..figures.classgrid import save_class_grid

        save_class_grid(images, [pipe.classes[i] for i in labels[::args.per_class]], args.per_class, out)
    else:
        save_grid(images, out)
    w = f", guidance w = {guidance:g}" if guidance else ""
    doubled = " on a doubled batch (guided)" if guidance else ""
    print(f"wrote {out} ({n} samples, step {pipe.step}{w}; {sampler}, {steps or pipe.diffusion.num_timesteps} "
          f"steps, {spacing} spacing, {pipe.nfe(sampler, steps)} NFE per sample{doubled})")
    if args.npz:
        args.npz.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": labels}
        np.savez(args.npz, **arrays)
        print(f"wrote {args.npz}: uint8 {images.shape}, key arr_0" + ("" if labels is None else ", labels arr_1"))
    return 0


def _sample_labels(args, pipe):
    """(labels (n,) or None, guidance) for ddpm sample; refuses class options for an unconditional run."""
    from ..classes import sample_labels

    return sample_labels(pipe, args.classes, args.per_class, args.guidance, n=args.n, seed=args.seed,
                         where=args.checkpoint or args.run_dir)


def register(sub) -> dict:
    _add_sample(sub)
    return {"sample": cmd_sample}
