"""`ddpm train`: a config from the preset, the flags and --set, then the trainer."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from ..config import RunConfig, load_config, parse_value, to_toml
from ..errors import UserError
from .common import add_cache_options, cache_arg


# flag -> config key, for the flags that override one config value
TRAIN_FLAGS = {
    "data": "data.spec", "image_size": "data.image_size", "channels": "data.channels", "skip_bad": "data.skip_bad",
    "steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "seed": "train.seed",
    "checkpoint_every": "train.checkpoint_every", "sample_every": "train.sample_every",
}


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train on images (Algorithm 1), writing checkpoints and sample grids",
                       description="Train a DDPM. Flags override the config; --set section.key=value sets any value.")
    p.add_argument("--data", help="digits (default), fashion-mnist, a folder of images, IDX or CIFAR files, .npz/.npy")
    p.add_argument("--out", required=True, type=Path, help="run directory (checkpoints, samples, metrics)")
    p.add_argument("--config", help="a TOML file or a preset name: digits (default), fashion_mnist, cifar10, ...")
    p.add_argument("--steps", type=int, help="total training steps")
    p.add_argument("--minutes", type=float, help="plan the run to end within this wall-clock budget: probe this "
                   "machine, then pick the network, batch, steps, LR and EMA schedules (train.budget_s)")
    p.add_argument("--hours", type=float, help="as --minutes, in hours")
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
    add_cache_options(p)
    p.add_argument("--prefetch", type=int, default=2, metavar="N",
                   help="batches read ahead by a background thread (default 2; 0 reads each in the step)")


def _budget_s(args) -> float | None:
    """--minutes / --hours as train.budget_s (seconds); a non-positive budget is the user's mistake."""
    minutes, hours = getattr(args, "minutes", None), getattr(args, "hours", None)
    if minutes is not None and hours is not None:
        raise UserError("--minutes and --hours: give one budget, not both")
    for flag, value in (("--minutes", minutes), ("--hours", hours)):
        if value is not None and not value > 0:
            raise UserError(f"{flag} {value:g}: the budget must be > 0")
    return minutes * 60.0 if minutes is not None else (hours * 3600.0 if hours is not None else None)


def fixed_keys(args) -> set[str]:
    """The config keys this command line sets: a planned run (--minutes) keeps them and chooses the rest."""
    keys = {key for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None and key != "data.spec"}
    return keys | {item.partition("=")[0].strip() for item in args.set} | \
        ({"model.preset"} if args.config is not None else set())


def resolve_train_config(args, base: RunConfig | None = None) -> RunConfig:
    """The preset or file (or `base`), then each flag, then each --set, in that order."""
    values = {key: getattr(args, flag) for flag, key in TRAIN_FLAGS.items() if getattr(args, flag) is not None}
    if _budget_s(args) is not None:
        values["train.budget_s"] = _budget_s(args)
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
    from ..train.autoconfig import choose_config

    base, why, data = choose_config(args.data, image_size=args.image_size, channels=args.channels,
                                    skip_bad=bool(args.skip_bad), cache=cache_arg(args))
    return resolve_train_config(args, base), f"config: {why}", data


def cmd_train(args) -> int:
    started = time.monotonic()  # a --minutes budget counts from here
    config, which, data = _train_config(args)
    if args.dry_run and args.conditional:  # show the num_classes that the labels give
        from ..data import load_dataset
        from ..train.conditional import prepare

        d = config.data
        data = data or load_dataset(d.spec, image_size=d.image_size, channels=d.channels, skip_bad=d.skip_bad,
                                    cache=cache_arg(args))
        config, _ = prepare(config, data, True)
    if args.dry_run:
        print(f"# {which}\n{to_toml(config)}", end="")
        return 0
    from ..train.trainer import Trainer

    if args.prefetch < 0:
        raise UserError(f"--prefetch {args.prefetch}: must be 0 (off) or more batches")
    if data is not None and (config.data.image_size, config.data.channels) != (args.image_size, args.channels):
        data = None  # a --set changed how the data is read: the trainer reads it again
    trainer = Trainer(config, args.out, resume=args.resume, force=args.force, device=args.device,
                      progress=not args.no_progress, cache=cache_arg(args), prefetch=args.prefetch,
                      conditional=args.conditional, dataset=data, started=started, fixed=fixed_keys(args))
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
        if "budget_s" in result:
            print(f"ended {result['elapsed_s']:.1f} s after the start of a {result['budget_s']:g} s budget "
                  f"({result['elapsed_s'] / result['budget_s']:.1%})")
    return 0


def register(sub) -> dict:
    _add_train(sub)
    return {"train": cmd_train}
