"""The paper's figures: `ddpm trajectory` (Fig. 6), `ddpm interpolate` (Fig. 8), `ddpm rate-distortion` (Fig. 5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from .common import (add_cache_options, add_class_options, add_precision_option, add_run_options, add_sampler_options,
                     cache_arg, guided_run, load_run, sampler_kwargs)


def _add_trajectory(sub) -> None:
    p = sub.add_parser("trajectory", help="x0 predicted along the sampling chain, T to 0 (DDPM Fig. 6)",
                       description="Sample with Algorithm 2 (all T steps) and draw, for each sample, the x0 the "
                                   "model predicts from x_t at evenly spaced t from T (left) to 0 (right).")
    add_run_options(p)
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/trajectory.png)")
    p.add_argument("--n", type=int, default=8, help="samples, one row each (default 8)")
    p.add_argument("--columns", type=int, default=10, help="timesteps shown, T .. 0 evenly spaced (default 10)")
    p.add_argument("--show", choices=("x0", "xt", "both"), default="x0",
                   help="x0: the predictions x0(x_t) (default, as Fig. 6); xt: the latents x_t themselves; "
                        "both: a row of x_t above each row of x0")
    p.add_argument("--batch-size", type=int, default=16, help="samples per chain (the whole chain is kept; default 16)")
    add_sampler_options(p, default="ancestral, all T steps (Algorithm 2, as Fig. 6)")
    add_class_options(p)


def cmd_trajectory(args) -> int:
    from ..figures.generation import save_trajectory, trajectory

    pipe = guided_run(load_run(args), args, args.n, args.batch_size)
    traj = trajectory(pipe, args.n, args.columns, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress, **sampler_kwargs(args))
    out = args.out or (args.run_dir / "trajectory.png")
    save_trajectory(traj, out, show=args.show)
    print(f"wrote {out} ({args.n} samples x {len(traj.t)} columns of {args.show}, t = "
          f"{', '.join(map(str, traj.t))}; step {pipe.step})")
    return 0


def _add_interpolate(sub) -> None:
    p = sub.add_parser("interpolate", help="interpolate two images in latent space (DDPM Sec. 4.3, Fig. 8)",
                       description="Encode images A and B with q(x_t | x_0), mix (1 - λ) x_t + λ x'_t and decode "
                                   "with the reverse process from t to 0, the noise fixed across λ. The row shows "
                                   "A, the decoded images for λ = 0 .. 1, and B.")
    add_run_options(p)
    p.add_argument("--a", required=True, help="an image file, or with --data an index into that data set")
    p.add_argument("--b", required=True, help="an image file, or with --data an index into that data set")
    p.add_argument("--data", help="take --a and --b by index from this data set (e.g. digits)")
    p.add_argument("--split", default="test", help="the split --a and --b index (default test)")
    p.add_argument("--t", type=int, help="the paper's timestep of the latents, 1 .. T (default T/2: 500 of 1000)")
    p.add_argument("--lambdas", type=int, default=11, help="number of λ from 0 to 1 (default 11)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/interpolation.png)")
    add_sampler_options(p, default="ancestral, all t steps (the reverse process, as Fig. 8)")
    add_cache_options(p)
    add_class_options(p)


def cmd_interpolate(args) -> int:
    from ..figures.inputs import dataset_for, image_from_dataset, image_from_file
    from ..figures.interpolation import interpolate, save_interpolation

    if args.classes is not None and "," in args.classes:
        raise UserError(f"--class {args.classes}: interpolate decodes every λ with one class; give one class")
    pipe = guided_run(load_run(args), args, 1, 1)  # one class for every λ: the decodes are one batch each
    if args.data is not None:
        ds = dataset_for(pipe, args.data, args.split, cache=cache_arg(args))
        a, b = (image_from_dataset(ds, value, flag, args.split) for value, flag in ((args.a, "--a"), (args.b, "--b")))
    else:
        a, b = image_from_file(args.a, pipe, "--a"), image_from_file(args.b, pipe, "--b")
    decoded = interpolate(pipe, a, b, args.t, args.lambdas, seed=args.seed, progress=not args.no_progress,
                          **sampler_kwargs(args))
    out = args.out or (args.run_dir / "interpolation.png")
    save_interpolation(a, b, decoded, out)
    t = pipe.diffusion.num_timesteps // 2 if args.t is None else args.t
    print(f"wrote {out} (A, {len(decoded)} interpolations at t = {t}, B; step {pipe.step})")
    return 0


def _add_rate_distortion(sub) -> None:
    p = sub.add_parser("rate-distortion", help="rate and distortion against t (DDPM Sec. 4.3, Fig. 5)",
                       description="Progressive coding: at each t from T to 0, the bits/dim sent so far (the bound's "
                                   "terms L_T, .., L_t; at t = 0 the whole NLL) and the RMSE of x0(x_t) on [0, 255]. "
                                   "Writes a PNG and a CSV (t, rate_bpd, distortion_rmse).")
    add_run_options(p)
    p.add_argument("--data", help="the real data set (default: the run's own)")
    p.add_argument("--split", default="test", help="real split to code (default test; pass train or all for a "
                                                   "data set without one)")
    p.add_argument("--n", type=int, default=256, help="real images (default 256; all T terms each)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--terms", type=Path, help="reuse the nll_terms.npz of ddpm eval --metrics nll instead")
    add_precision_option(p)
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/rate_distortion.png)")
    p.add_argument("--csv", type=Path, help="CSV to write (default: the PNG's path with .csv)")
    add_cache_options(p)


def cmd_rate_distortion(args) -> int:
    from ..figures.coding import load_terms, plot_rate_distortion, rate_distortion, save_csv
    from ..figures.inputs import dataset_for

    if args.n < 1 or args.batch_size < 1:
        raise UserError("--n and --batch-size must be at least 1")
    pipe = load_run(args)
    if args.terms is not None:
        curve, source = load_terms(args.terms, pipe.diffusion.num_timesteps), f"terms from {args.terms}"
    else:
        ds = dataset_for(pipe, args.data, args.split, cache=cache_arg(args))
        images = ds.images[: args.n]
        from ..evaluate.conditional import nll_model

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


def register(sub) -> dict:
    _add_trajectory(sub)
    _add_interpolate(sub)
    _add_rate_distortion(sub)
    return {"trajectory": cmd_trajectory, "interpolate": cmd_interpolate, "rate-distortion": cmd_rate_distortion}
