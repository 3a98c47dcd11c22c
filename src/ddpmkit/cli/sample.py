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
    p.add_argument("--npz", type=Path, help="also write uint8 (N, H, W, C) under key arr_0 (the ADM format); "
                   "finished batches wait in NPZ.shards/, so the same command after a kill resumes")
    add_sampler_options(p)
    p.add_argument("--seed", type=int, default=0, help="image i depends only on (seed, i): any --batch-size or "
                   "number of torchrun processes gives the same images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-ema", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    add_class_options(p)
    p.add_argument("--per-class", type=int, metavar="K",
                   help="conditional run: K samples of each class (or of each --class), one labelled row per class")
    p.add_argument("--x-T", dest="x_T", type=Path, metavar="LATENTS.npz",
                   help="decode the x_T of `ddpm encode` with its solver, instead of sampling (--n is ignored)")


def _warn_if_untrained(pipe, run_dir: Path) -> None:
    """Say so on stderr, with why and what to do, when the checkpoint is too early to give anything but noise."""
    import sys

    from ..store.readiness import warning

    if pipe.step == 0:  # imported weights (ddpm import-diffusers) say nothing of how they were trained
        return
    line = warning(pipe.config.train, pipe.step, run_dir, pipe.config.data.spec)
    if line:
        print(line, file=sys.stderr)


def cmd_sample(args) -> int:
    from ..distributed import cleanup, setup

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    if args.x_T is not None:
        from .edit import decode_latents

        return decode_latents(args)
    info = setup(args.device)  # under torchrun: this rank draws its share (ddpmkit.jobs), rank 0 writes
    try:
        return _sample(args, info)
    finally:
        cleanup(info)


def _sample(args, info) -> int:
    from ..figures.grid import save_grid
    from ..fileio import atomic_path
    from ..jobs import remove_shards, run_job, sample_job, shard_root
    from ..pipeline import load

    pipe = load(args.checkpoint or args.run_dir, ema=not args.no_ema,
                device=info.device, precision=args.precision)
    sampler, steps, _, spacing = pipe.sampler_settings(args.sampler, args.steps, args.eta, args.spacing)
    labels, guidance = _sample_labels(args, pipe)
    n = args.n if labels is None else len(labels)
    out = args.out or (args.run_dir / "sample_grid.png")
    # image i depends only on (--seed, i); finished batches are shards beside the result, so the same command
    # again after a kill continues from them
    job = sample_job(pipe, n, seed=args.seed, sampler=sampler, steps=steps, eta=args.eta, spacing=spacing,
                     labels=labels, guidance=guidance, batch_size=args.batch_size, ema=not args.no_ema,
                     root=shard_root(args.npz or out), progress=not args.no_progress)
    rows = run_job(job, info)
    if rows is None:  # not rank 0
        return 0
    images = rows["images"]
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
        arrays = {"arr_0": images} if labels is None else {"arr_0": images, "arr_1": rows["labels"]}
        with atomic_path(args.npz) as tmp:
            np.savez(tmp, **arrays)
        print(f"wrote {args.npz}: uint8 {images.shape}, key arr_0" + ("" if labels is None else ", labels arr_1"))
    remove_shards(job)
    _warn_if_untrained(pipe, args.run_dir)  # last: a mistake in the options stays a one-line error
    return 0


def _sample_labels(args, pipe):
    """(labels (n,) or None, guidance) for ddpm sample; refuses class options for an unconditional run."""
    from ..classes import sample_labels

    return sample_labels(pipe, args.classes, args.per_class, args.guidance, n=args.n, seed=args.seed,
                         where=args.checkpoint or args.run_dir)


def register(sub) -> dict:
    _add_sample(sub)
    return {"sample": cmd_sample}
