"""The `ddpm` command: argv -> RunConfig -> one library call. No math here.

A user's mistake (UserError, or a bad flag) is printed as one line on stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import dataclasses
import signal
import sys
from pathlib import Path

import numpy as np

from .config import RunConfig, load_config, parse_value, to_toml
from .errors import UserError

# flag -> config key, for the flags that override one config value
TRAIN_FLAGS = {
    "data": "data.spec", "image_size": "data.image_size", "channels": "data.channels", "skip_bad": "data.skip_bad",
    "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
    "checkpoint_every": "train.checkpoint_every", "sample_every": "train.sample_every",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train on images (Algorithm 1), writing checkpoints and sample grids",
                       description="Train a DDPM. Flags override the config; --set section.key=value sets any value.")
    p.add_argument("--data", help="digits (default), fashion-mnist, a folder of images, IDX or CIFAR files, .npz/.npy")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, samples, metrics)")
    p.add_argument("--config", help="a TOML file or a preset name: digits (default), fashion_mnist, cifar10, ...")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--batch-size", type=int, help="global batch size (split across torchrun processes)")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--seed", type=int, help="seed of every random draw (deterministic on the CPU)")
    p.add_argument("--image-size", type=int, help="resize and centre-crop images to this size")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB); default: what most files are")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--sample-every", type=int, help="steps between sample grids")
    p.add_argument("--resume", action="store_true", help="continue from the newest valid checkpoint in --out")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config")
    p.add_argument("--skip-bad", action="store_true", default=None, help="skip unreadable images (counted)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config value, e.g. train.warmup=500")
    p.add_argument("--conditional", action="store_true",
                   help="class-conditional: model.num_classes from the data's labels, trained with label dropout "
                        "(train.label_dropout, default 0.1) so guidance works")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cache_options(p)
    p.add_argument("--prefetch", type=int, default=2, metavar="N",
                   help="batches read ahead by a background thread (default 2; 0 reads each in the step)")


def _add_cache_options(p) -> None:
    """--cache DIR / --no-cache: where a folder of images is decoded once and mapped (ddpmkit.data.cache)."""
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="decoded-image cache folder for image folders (default $DDPMKIT_CACHE, else ~/.cache/ddpmkit)")
    p.add_argument("--no-cache", action="store_true", help="decode image folders into memory instead (no cache)")


def _cache_arg(args):
    """What load_dataset's `cache` takes: False with --no-cache, else an ImageCache in --cache or the default."""
    if args.no_cache and args.cache is not None:
        raise UserError("--cache and --no-cache contradict each other: pass one")
    if args.no_cache:
        return False
    from .data.cache import ImageCache, as_image_cache

    folder = as_image_cache(args.cache or True).root
    return ImageCache(folder, progress=not args.no_progress)


def _add_sampler_options(p, default: str = "the run's [sample] config") -> None:
    """--sampler, --steps, --spacing and --eta, the same wherever a command samples."""
    from .samplers import SAMPLERS, SPACINGS

    p.add_argument("--sampler", choices=list(SAMPLERS), help=f"default: {default}")
    p.add_argument("--steps", type=int, help=f"sampling steps, 1 .. T (< T respaces); default: {default}")
    p.add_argument("--spacing", choices=list(SPACINGS), help=f"where the steps lie in t; default: {default}")
    p.add_argument("--eta", type=float, help="ddim only: 0 deterministic (default), 1 DDPM-like")


def _add_sample(sub) -> None:
    p = sub.add_parser("sample", help="draw samples from a trained run (Algorithm 2, respaced, or DDIM)")
    p.add_argument("run_dir", type=Path, help="a run directory (newest valid checkpoint) or a checkpoint folder")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder to use instead of the newest")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=Path, help="grid PNG to write (default RUN_DIR/sample_grid.png)")
    p.add_argument("--npz", type=Path, help="also write uint8 (N, H, W, C) under key arr_0 (the ADM format)")
    _add_sampler_options(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--no-ema", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_class_options(p)
    p.add_argument("--per-class", type=int, metavar="K",
                   help="conditional run: K samples of each class (or of each --class), one labelled row per class")


def _add_class_options(p) -> None:
    """--class and --guidance, for a conditional run (ddpm train --conditional)."""
    p.add_argument("--class", dest="classes", metavar="C",
                   help="conditional run: a class index or name, or a comma list cycled over the samples "
                        "(default: the training data's proportions)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance weight w >= 0 (default 0: the conditional model); "
                        "eps = (1 + w) eps(x, c) - w eps(x); diffusers' guidance_scale = 1 + w")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="measure a run: bits/dim, FID, IS, precision/recall, memorisation")
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory (or use --samples alone)")
    p.add_argument("--data", help="the real data set (default: the run's own)")
    p.add_argument("--split", default="test", help="real split to compare with (default test)")
    p.add_argument("--metrics", default="nll,fid,pr",
                   help="comma list of nll,fid,is,pr,memo,acc (default nll,fid,pr); acc needs --features")
    p.add_argument("--n", type=int, default=1000, help="samples to generate for fid/is/pr/memo (default 1000)")
    p.add_argument("--nll-n", type=int, default=256, help="real images for the bound (default 256; all T terms each)")
    p.add_argument("--json", type=Path, help="write the results here (default RUN_DIR/eval.json)")
    p.add_argument("--samples", type=Path, help="an .npz of uint8 samples (key arr_0) instead of sampling the model")
    p.add_argument("--inception", type=Path, help="Inception-v3 FID weights as safetensors (or $DDPMKIT_INCEPTION)")
    p.add_argument("--features", type=Path, help="a classifier from ddpm train-classifier as the feature space")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--no-ema", action="store_true")
    _add_sampler_options(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    _add_cache_options(p)
    _add_class_options(p)


def _add_train_classifier(sub) -> None:
    p = sub.add_parser("train-classifier", help="train a small classifier whose features FID/PR can use")
    p.add_argument("--data", required=True, help="a labelled data set: digits, fashion-mnist, IDX, CIFAR, npz")
    p.add_argument("--out", required=True, type=Path, help="the .safetensors file to write")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int)
    p.add_argument("--channels", type=int, choices=(1, 3))
    p.add_argument("--no-progress", action="store_true")


def _add_run_options(p) -> None:
    """The options every command that loads a trained run shares."""
    p.add_argument("run_dir", type=Path, help="a run directory (newest valid checkpoint) or a checkpoint folder")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder to use instead of the newest")
    p.add_argument("--no-ema", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_trajectory(sub) -> None:
    p = sub.add_parser("trajectory", help="x0 predicted along the sampling chain, T to 0 (DDPM Fig. 6)",
                       description="Sample with Algorithm 2 (all T steps) and draw, for each sample, the x0 the "
                                   "model predicts from x_t at evenly spaced t from T (left) to 0 (right).")
    _add_run_options(p)
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/trajectory.png)")
    p.add_argument("--n", type=int, default=8, help="samples, one row each (default 8)")
    p.add_argument("--columns", type=int, default=10, help="timesteps shown, T .. 0 evenly spaced (default 10)")
    p.add_argument("--show", choices=("x0", "xt", "both"), default="x0",
                   help="x0: the predictions x0(x_t) (default, as Fig. 6); xt: the latents x_t themselves; "
                        "both: a row of x_t above each row of x0")
    p.add_argument("--batch-size", type=int, default=16, help="samples per chain (the whole chain is kept; default 16)")
    _add_sampler_options(p, default="ancestral, all T steps (Algorithm 2, as Fig. 6)")
    _add_class_options(p)


def _add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="interpolate two images in latent space (DDPM Sec. 4.3, Fig. 8)",
                       description="Encode images A and B with q(x_t | x_0), mix (1 - λ) x_t + λ x'_t and decode "
                                   "with the reverse process from t to 0, the noise fixed across λ. The row shows "
                                   "A, the decoded images for λ = 0 .. 1, and B.")
    _add_run_options(p)
    p.add_argument("--a", required=True, help="an image file, or with --data an index into that data set")
    p.add_argument("--b", required=True, help="an image file, or with --data an index into that data set")
    p.add_argument("--data", help="take --a and --b by index from this data set (e.g. digits)")
    p.add_argument("--split", default="test", help="the split --a and --b index (default test)")
    p.add_argument("--t", type=int, help="the paper's timestep of the latents, 1 .. T (default T/2: 500 of 1000)")
    p.add_argument("--lambdas", type=int, default=11, help="number of λ from 0 to 1 (default 11)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/interpolation.png)")
    _add_sampler_options(p, default="ancestral, all t steps (the reverse process, as Fig. 8)")
    _add_cache_options(p)
    _add_class_options(p)


def _add_rate_distortion(sub) -> None:
    p = sub.add_parser("rate-distortion", help="rate and distortion against t (DDPM Sec. 4.3, Fig. 5)",
                       description="Progressive coding: at each t from T to 0, the bits/dim sent so far (the bound's "
                                   "terms L_T, .., L_t; at t = 0 the whole NLL) and the RMSE of x0(x_t) on [0, 255]. "
                                   "Writes a PNG and a CSV (t, rate_bpd, distortion_rmse).")
    _add_run_options(p)
    p.add_argument("--data", help="the real data set (default: the run's own)")
    p.add_argument("--split", default="test", help="real split to code (default test; pass train or all for a "
                                                   "data set without one)")
    p.add_argument("--n", type=int, default=256, help="real images (default 256; all T terms each)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--terms", type=Path, help="reuse the nll_terms.npz of ddpm eval --metrics nll instead")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/rate_distortion.png)")
    p.add_argument("--csv", type=Path, help="CSV to write (default: the PNG's path with .csv)")
    _add_cache_options(p)


def _add_diffusers(sub) -> None:
    p = sub.add_parser("import-diffusers", help="a diffusers DDPM folder (e.g. google/ddpm-cifar10-32) -> a run",
                       description="Read a UNet2DModel + DDPMScheduler folder (flat, as the google/ddpm-* "
                                   "repositories, or a DDPMPipeline's) and write a run directory that ddpm sample, "
                                   "eval, trajectory, interpolate and rate-distortion take. Safetensors only.")
    p.add_argument("dir", type=Path, help="the downloaded diffusers folder")
    p.add_argument("--out", required=True, type=Path, help="the run directory to create (must not exist)")
    p.add_argument("--data", help="the data set the model was trained on, recorded in the run's config "
                                  "(default: the matching preset's, e.g. cifar-10-batches-py)")
    p = sub.add_parser("export-diffusers", help="a run -> a folder DDPMPipeline.from_pretrained loads",
                       description="Write the run's network and process in diffusers' pipeline layout "
                                   "(model_index.json, unet/, scheduler/), exactly or not at all.")
    p.add_argument("run_dir", type=Path, help="a run directory (newest valid checkpoint) or a checkpoint folder")
    p.add_argument("--out", required=True, type=Path, help="the folder to create (must not exist)")
    p.add_argument("--no-ema", action="store_true", help="export the training weights instead of the EMA")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddpm", description="Denoising Diffusion Probabilistic Models (Ho et al. 2020).")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"ddpmkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_sample(sub)
    _add_eval(sub)
    _add_train_classifier(sub)
    _add_trajectory(sub)
    _add_interpolate(sub)
    _add_rate_distortion(sub)
    _add_diffusers(sub)
    return parser


def resolve_train_config(args, base: RunConfig | None = None) -> RunConfig:
    """The preset or file (or `base`), then each flag, then each --set, in that order."""
    values = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    for item in args.set:
        key, eq, value = item.partition("=")
        if not eq:
            raise UserError(f"--set {item}: expected KEY=VALUE, e.g. --set train.warmup=500")
        values[key.strip()] = parse_value(value.strip())
    return (base or load_config(args.config)).with_values(values, source="--set")


def _train_config(args):
    """(config, the line saying which config, the data set if it was read): --config, else chosen for --data."""
    if args.config is not None:
        return resolve_train_config(args), f"config: {args.config}", None
    from .train.autoconfig import choose_config

    base, why, data = choose_config(args.data, image_size=args.image_size, channels=args.channels,
                                    skip_bad=bool(args.skip_bad), cache=_cache_arg(args))
    return resolve_train_config(args, base), f"config: {why}", data


def cmd_train(args) -> int:
    config, which, data = _train_config(args)
    if args.dry_run and args.conditional:  # show the num_classes that the labels give
        from .data import load_dataset
        from .train.conditional import prepare

        d = config.data
        data = data or load_dataset(d.spec, image_size=d.image_size, channels=d.channels, skip_bad=d.skip_bad,
                                    cache=_cache_arg(args))
        config, _ = prepare(config, data, True)
    if args.dry_run:
        print(f"# {which}\n{to_toml(config)}", end="")
        return 0
    from .train.trainer import Trainer

    if args.prefetch < 0:
        raise UserError(f"--prefetch {args.prefetch}: must be 0 (off) or more batches")
    if data is not None and (config.data.image_size, config.data.channels) != (args.image_size, args.channels):
        data = None  # a --set changed how the data is read: the trainer reads it again
    trainer = Trainer(config, args.out, resume=args.resume, force=args.force, device=args.device,
                      progress=not args.no_progress, cache=_cache_arg(args), prefetch=args.prefetch,
                      conditional=args.conditional, dataset=data)
    trainer.say(which)
    result = trainer.run()
    quiet = not result.get("is_main", True)  # under torchrun only rank 0 reports
    if result["interrupted"]:
        if not quiet:
            print(f"stopped by {result['interrupted']} at step {result['step']}; checkpoint {result['checkpoint']}; "
                  f"continue with: ddpm train --out {args.out} --resume")
        sig = getattr(signal, str(result["interrupted"]), None)
        return 128 + int(sig) if sig is not None else 1
    if not quiet:
        print(f"trained to step {result['step']}; checkpoint {result['checkpoint']}; "
              f"samples {result['samples'] or 'none (--sample-every 0)'}")
    return 0


def cmd_sample(args) -> int:
    from .figures.grid import save_grid
    from .pipeline import load

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    pipe = load(args.checkpoint or args.run_dir, ema=not args.no_ema,
                device=None if args.device == "auto" else args.device)
    sampler, steps, _, spacing = pipe.sampler_settings(args.sampler, args.steps, args.eta, args.spacing)
    labels, guidance = _sample_labels(args, pipe)
    n = args.n if labels is None else len(labels)
    images = pipe.sample(n, sampler=sampler, steps=steps, eta=args.eta, spacing=spacing, seed=args.seed,
                         batch_size=args.batch_size, progress=not args.no_progress, classes=labels, guidance=guidance)
    out = args.out or (args.run_dir / "sample_grid.png")
    if args.per_class is not None:
        from .figures.classgrid import save_class_grid

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
    from .classes import sample_labels

    return sample_labels(pipe, args.classes, args.per_class, args.guidance, n=args.n, seed=args.seed,
                         where=args.checkpoint or args.run_dir)


def cmd_eval(args) -> int:
    import json

    from .evaluate.run import EvalRequest, evaluate

    if args.run_dir is None and args.samples is None:
        raise UserError("give RUN_DIR, or --samples FILE with --data SPEC")
    if args.run_dir is None and args.data is None:
        raise UserError("--samples needs --data SPEC to compare with")
    out = args.json or (args.run_dir / "eval.json" if args.run_dir else Path("eval.json"))
    request = EvalRequest(
        data=args.data, run_dir=args.run_dir, checkpoint=args.checkpoint, samples=args.samples, split=args.split,
        metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()), n=args.n, nll_n=args.nll_n,
        ema=not args.no_ema, sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
        batch_size=args.batch_size,
        seed=args.seed, inception=args.inception, features=args.features,
        device=None if args.device == "auto" else args.device, progress=not args.no_progress, out_dir=out.parent,
        cache=_cache_arg(args), classes=args.classes, guidance=args.guidance)
    result = evaluate(request)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:>26}  {value:.4f}")
        elif isinstance(value, dict) and key == "acc_per_class":
            print(f"{key:>26}  " + ", ".join(f"{k}: {v:.3f}" for k, v in value.items()))
        elif key not in ("memorisation_detail",):
            print(f"{key:>26}  {value}")
    print(f"wrote {out}")
    return 0


def cmd_train_classifier(args) -> int:
    from .data import load_dataset
    from .evaluate.classifier import format_report, train_classifier

    data = load_dataset(args.data, image_size=args.image_size, channels=args.channels, split="train")
    kwargs = {"steps": args.steps} if args.steps else {}
    result = train_classifier(data, args.out, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              progress=not args.no_progress, **kwargs)
    print(format_report(result))
    print(f"wrote {args.out}: use it with ddpm eval --features {args.out}")
    return 0


def _load_run(args):
    from .pipeline import load

    return load(args.checkpoint or args.run_dir, ema=not args.no_ema,
                device=None if args.device == "auto" else args.device)


def _sampler_kwargs(args) -> dict:
    """The sampler options given on the command line (the figure functions default the rest)."""
    given = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "eta": args.eta}
    return {k: v for k, v in given.items() if v is not None}
def _guided_run(pipe, args, n: int, per_batch: int):
    """The pipeline with --class/--guidance applied (classes.guided_pipeline)."""
    from .classes import guided_pipeline

    return guided_pipeline(pipe, args.classes, args.guidance, n=n, per_batch=per_batch, where=args.run_dir)


def cmd_trajectory(args) -> int:
    from .figures.generation import save_trajectory, trajectory

    pipe = _guided_run(_load_run(args), args, args.n, args.batch_size)
    traj = trajectory(pipe, args.n, args.columns, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress, **_sampler_kwargs(args))
    out = args.out or (args.run_dir / "trajectory.png")
    save_trajectory(traj, out, show=args.show)
    print(f"wrote {out} ({args.n} samples x {len(traj.t)} columns of {args.show}, t = "
          f"{', '.join(map(str, traj.t))}; step {pipe.step})")
    return 0


def cmd_interpolate(args) -> int:
    from .figures.inputs import dataset_for, image_from_dataset, image_from_file
    from .figures.interpolation import interpolate, save_interpolation

    if args.classes is not None and "," in args.classes:
        raise UserError(f"--class {args.classes}: interpolate decodes every λ with one class; give one class")
    pipe = _guided_run(_load_run(args), args, 1, 1)  # one class for every λ: the decodes are one batch each
    if args.data is not None:
        ds = dataset_for(pipe, args.data, args.split, cache=_cache_arg(args))
        a, b = (image_from_dataset(ds, value, flag, args.split) for value, flag in ((args.a, "--a"), (args.b, "--b")))
    else:
        a, b = image_from_file(args.a, pipe, "--a"), image_from_file(args.b, pipe, "--b")
    decoded = interpolate(pipe, a, b, args.t, args.lambdas, seed=args.seed, progress=not args.no_progress,
                          **_sampler_kwargs(args))
    out = args.out or (args.run_dir / "interpolation.png")
    save_interpolation(a, b, decoded, out)
    t = pipe.diffusion.num_timesteps // 2 if args.t is None else args.t
    print(f"wrote {out} (A, {len(decoded)} interpolations at t = {t}, B; step {pipe.step})")
    return 0


def cmd_rate_distortion(args) -> int:
    from .figures.coding import load_terms, plot_rate_distortion, rate_distortion, save_csv
    from .figures.inputs import dataset_for

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    pipe = _load_run(args)
    if args.terms is not None:
        curve, source = load_terms(args.terms, pipe.diffusion.num_timesteps), f"terms from {args.terms}"
    else:
        ds = dataset_for(pipe, args.data, args.split, cache=_cache_arg(args))
        images = ds.images[: args.n]
        from .evaluate.conditional import nll_model

        model, one_batch = nll_model(pipe, ds, len(images))  # a conditional run: the bound given each label
        curve = rate_distortion(dataclasses.replace(pipe, model=model), images, seed=args.seed,
                                batch_size=one_batch or args.batch_size, progress=not args.no_progress)
        source = f"{len(images)} images of {ds.name} ({args.split})"
    out = args.out or (args.run_dir / "rate_distortion.png")
    csv = args.csv or out.with_suffix(".csv")
    save_csv(curve, csv)
    plot_rate_distortion(curve, out)
    print(f"rate at t = 0 (the NLL): {curve['rate_bpd'][-1]:.4f} bits/dim; distortion at t = T: "
          f"{curve['distortion_rmse'][0]:.2f} RMSE; {source}")
    print(f"wrote {out} and {csv}")
    return 0


def cmd_import_diffusers(args) -> int:
    from .store.diffusers_io import import_diffusers

    result = import_diffusers(args.dir, args.out, data=args.data)
    d, m = result["config"].diffusion, result["config"].model
    print(f"imported {args.dir} ({result['layout']} layout, {result['tensors']} tensors, "
          f"{result['parameters']:,} parameters) as model and EMA weights")
    print(f"network: preset {m.preset}, ch {m.ch}, ch_mult {tuple(m.ch_mult)}, attention at {tuple(m.attn_resolutions)}"
          f"; process: {d.schedule} T={d.timesteps}, {d.parameterization}, {d.variance}")
    print(f"wrote {result['checkpoint']}; try: ddpm sample {args.out}")
    return 0


def cmd_export_diffusers(args) -> int:
    from .store.diffusers_io import export_diffusers

    result = export_diffusers(args.run_dir, args.out, ema=not args.no_ema)
    print(f"exported {result['weights']} weights of step {result['step']} ({result['parameters']:,} parameters) "
          f"to {result['out']}: load with diffusers.DDPMPipeline.from_pretrained({str(result['out'])!r})")
    return 0


COMMANDS = {"train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "train-classifier": cmd_train_classifier,
            "trajectory": cmd_trajectory, "interpolate": cmd_interpolate, "rate-distortion": cmd_rate_distortion,
            "import-diffusers": cmd_import_diffusers, "export-diffusers": cmd_export_diffusers}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except UserError as err:
        print(f"ddpm {args.command}: error: {_rank_prefix(str(err))}{err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpm {args.command}: interrupted", file=sys.stderr)
        return 130


def _rank_prefix(message: str) -> str:
    """'rank R: ' under torchrun with more than one process, so a failing rank names itself; else ''."""
    rank = os.environ.get("RANK")
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or rank is None or message.startswith(f"rank {rank}:"):
        return ""
    return f"rank {rank}: "


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
