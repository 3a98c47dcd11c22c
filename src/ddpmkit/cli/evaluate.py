"""`ddpm eval`: bits/dim, FID, IS, precision/recall, memorisation and class accuracy of a run or an .npz;
`ddpm train-classifier`: the small classifier whose features they can use."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .common import add_cache_options, add_class_options, add_sampler_options, cache_arg


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="measure a run: bits/dim, FID, IS, precision/recall, memorisation")
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory (or use --samples alone)")
    p.add_argument("--data", help="the real data set (default: the run's own)")
    p.add_argument("--split", default="test", help="real split to compare with (default test)")
    p.add_argument("--metrics", default="nll,fid,pr",
                   help="comma list of nll,fid,is,pr,kid,memo,acc (default nll,fid,pr); acc needs --features")
    p.add_argument("--n", type=int, default=1000, help="samples to generate for fid/is/pr/kid/memo (default 1000)")
    p.add_argument("--nll-n", type=int, default=256, help="real images for the bound (default 256; all T terms each)")
    p.add_argument("--json", type=Path, help="write the results here (default RUN_DIR/eval.json)")
    p.add_argument("--samples", type=Path, help="an .npz of uint8 samples (key arr_0) instead of sampling the model")
    p.add_argument("--inception", type=Path, help="Inception-v3 FID weights as safetensors (or $DDPMKIT_INCEPTION)")
    p.add_argument("--features", type=Path, help="a classifier from ddpm train-classifier as the feature space")
    p.add_argument("--checkpoint", type=Path)
    p.add_argument("--no-ema", action="store_true")
    add_sampler_options(p)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    add_cache_options(p)
    add_class_options(p)


def cmd_eval(args) -> int:
    from ..distributed import cleanup, setup
    from ..evaluate.run import EvalRequest, evaluate

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
        cache=cache_arg(args), classes=args.classes, guidance=args.guidance, json=out,
        precision=args.precision)
    info = setup(args.device)  # under torchrun: this rank's share of the sampling and the bound (ddpmkit.jobs)
    request.device = str(info.device) if info.active else request.device
    try:
        result = evaluate(request, info)  # writes `out` after each metric
    finally:
        cleanup(info)
    if result is None:  # not rank 0
        return 0
    for key, value in result.items():
        if isinstance(value, float):
            print(f"{key:>26}  {value:.4f}")
        elif isinstance(value, dict) and key == "acc_per_class":
            print(f"{key:>26}  " + ", ".join(f"{k}: {v:.3f}" for k, v in value.items()))
        elif key not in ("memorisation_detail", "protocol"):
            print(f"{key:>26}  {value}")
    from ..evaluate.protocol import protocol_lines

    print("\n".join(protocol_lines(result.get("protocol", {}))))
    print(f"wrote {out}")
    return 0


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


def cmd_train_classifier(args) -> int:
    from ..data import load_dataset
    from ..evaluate.classifier import format_report, train_classifier

    data = load_dataset(args.data, image_size=args.image_size, channels=args.channels, split="train")
    kwargs = {"steps": args.steps} if args.steps else {}
    result = train_classifier(data, args.out, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                              progress=not args.no_progress, **kwargs)
    print(format_report(result))
    print(f"wrote {args.out}: use it with ddpm eval --features {args.out}")
    return 0


def register(sub) -> dict:
    _add_eval(sub)
    _add_train_classifier(sub)
    return {"eval": cmd_eval, "train-classifier": cmd_train_classifier}
