"""What the `ddpm` commands share: one-line argparse errors and the option groups that several commands
take (cache, sampler, class, run), and the helpers that read them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_cache_options(p) -> None:
    """--cache DIR / --no-cache: where a folder of images is decoded once and mapped (ddpmkit.data.cache)."""
    p.add_argument("--cache", type=Path, metavar="DIR",
                   help="decoded-image cache folder for image folders (default $DDPMKIT_CACHE, else ~/.cache/ddpmkit)")
    p.add_argument("--no-cache", action="store_true", help="decode image folders into memory instead (no cache)")


def cache_arg(args):
    """What load_dataset's `cache` takes: False with --no-cache, else an ImageCache in --cache or the default."""
    if args.no_cache and args.cache is not None:
        raise UserError("--cache and --no-cache contradict each other: pass one")
    if args.no_cache:
        return False
    from ..data.cache import ImageCache, as_image_cache

    folder = as_image_cache(args.cache or True).root
    return ImageCache(folder, progress=not args.no_progress)


def add_sampler_options(p, default: str = "the run's [sample] config") -> None:
    """--sampler, --steps, --spacing and --eta, the same wherever a command samples."""
    from ..samplers import SAMPLERS, SPACINGS

    p.add_argument("--sampler", choices=list(SAMPLERS), help=f"default: {default}")
    p.add_argument("--steps", type=int, help=f"sampling steps, 1 .. T (< T respaces); default: {default}")
    p.add_argument("--spacing", choices=list(SPACINGS), help=f"where the steps lie in t; default: {default}")
    p.add_argument("--eta", type=float, help="ddim only: 0 deterministic (default), 1 DDPM-like")
    add_precision_option(p)


def add_precision_option(p) -> None:
    """--precision: the network's arithmetic while sampling (ddpmkit.precision); every command that samples."""
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="the network under autocast while sampling; auto: bf16 where the device has native bf16 "
                        "(AVX-512 BF16, AMX, CUDA sm80+), else fp32; default: the run's [sample] precision")


def add_class_options(p) -> None:
    """--class and --guidance, for a conditional run (ddpm train --conditional)."""
    p.add_argument("--class", dest="classes", metavar="C",
                   help="conditional run: a class index or name, or a comma list cycled over the samples "
                        "(default: the training data's proportions)")
    p.add_argument("--guidance", type=float, metavar="W",
                   help="classifier-free guidance weight w >= 0 (default 0: the conditional model); "
                        "eps = (1 + w) eps(x, c) - w eps(x); diffusers' guidance_scale = 1 + w")


def add_run_options(p) -> None:
    """The options every command that loads a trained run shares."""
    p.add_argument("run_dir", type=Path, help="a run directory (newest valid checkpoint) or a checkpoint folder")
    p.add_argument("--checkpoint", type=Path, help="a checkpoint folder to use instead of the newest")
    p.add_argument("--no-ema", action="store_true", help="use the training weights instead of the EMA")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_run(args):
    from ..pipeline import load

    return load(args.checkpoint or args.run_dir, ema=not args.no_ema,
                device=None if args.device == "auto" else args.device, precision=getattr(args, "precision", None))


def sampler_kwargs(args) -> dict:
    """The sampler options given on the command line (the figure functions default the rest)."""
    given = {"sampler": args.sampler, "steps": args.steps, "spacing": args.spacing, "eta": args.eta}
    return {k: v for k, v in given.items() if v is not None}


def guided_run(pipe, args, n: int, per_batch: int):
    """The pipeline with --class/--guidance applied (classes.guided_pipeline)."""
    from ..classes import guided_pipeline

    return guided_pipeline(pipe, args.classes, args.guidance, n=n, per_batch=per_batch, where=args.run_dir)
