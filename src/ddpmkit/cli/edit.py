"""Editing images with a trained run: `ddpm reconstruct` (DDPM Fig. 7, SDEdit), `ddpm inpaint` (RePaint) and
`ddpm encode` (the probability-flow ODE, x_0 -> x_T); `ddpm sample --x-T` decodes through `decode_latents`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import UserError
from .common import (add_cache_options, add_class_options, add_run_options, add_sampler_options, cache_arg,
                     guided_run, load_run, sampler_kwargs)

IMAGE_HELP = ("an image file of any size (resized and centre-cropped as training data are), or with --data an index "
              "5, a list 0,5,9 or a range 0:40 (40 left out) of that data set's --split")


def _add_inputs(p, what: str) -> None:
    add_run_options(p)
    p.add_argument("--image", required=True, help=IMAGE_HELP)
    p.add_argument("--data", help="take --image by index from this data set (e.g. digits)")
    p.add_argument("--split", default="test", help="the split --image indexes (default test)")
    p.add_argument("--batch-size", type=int, default=256, help="chains run together (default 256)")
    p.add_argument("--npz", type=Path, help=f"also write {what}")
    add_cache_options(p)
    add_class_options(p)


def _inputs(args):
    """(pipeline with --class/--guidance applied, uint8 images, description)."""
    from ..figures.inputs import images_for

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    if args.classes is not None and "," in args.classes:
        raise UserError(f"--class {args.classes}: give one class; every image is edited with it")
    pipe = guided_run(load_run(args), args, 1, 1)
    images, _, what = images_for(pipe, args.image, args.data, args.split, cache=cache_arg(args) if args.data else None)
    return pipe, images, what


def _uint8(x: np.ndarray) -> np.ndarray:
    """float (..., C, H, W) in model range -> uint8 (N, H, W, C)."""
    import torch

    from ..data import from_model_range

    return from_model_range(torch.from_numpy(np.ascontiguousarray(x.reshape(-1, *x.shape[-3:])))).numpy()


def _write_npz(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    print(f"wrote {path}: " + ", ".join(f"{k} {v.dtype} {v.shape}" for k, v in arrays.items()))


def _add_reconstruct(sub) -> None:
    p = sub.add_parser("reconstruct", help="samples of p(x0 | x_t) from a noised image (DDPM Fig. 7; SDEdit)",
                       description="Noise each image once to x_t ~ q(x_t | x_0) at each --t and draw --n samples of "
                                   "p(x_0 | x_t) from it by the reverse process from t (DDPM Sec. 4.3, Fig. 7). On a "
                                   "rough image of your own this is SDEdit. One row per image and t: the image, x_t, "
                                   "the samples.")
    _add_inputs(p, "the samples, uint8 (N, H, W, C) under arr_0 (ADM layout; image-major, then t, then draw) and "
                   "their t under t")
    p.add_argument("--t", default=None, help="the paper's timesteps, 1 .. T, comma-separated "
                                             "(default 100,250,500,750,1000 for T = 1000; the same fractions of T)")
    p.add_argument("--n", type=int, default=4, help="samples of p(x0 | x_t) per image and t (default 4)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/reconstruct.png)")
    add_sampler_options(p, default="ancestral on all t steps (Algorithm 2 from t; --steps above t counts as t)")


def _parse_t(text: str | None):
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--t {text!r}: give timesteps as integers, e.g. 100,250,500") from None


def cmd_reconstruct(args) -> int:
    from ..edit import reconstruct
    from ..figures.grid import save_grid

    if args.n < 1:
        raise UserError("--n must be at least 1")
    pipe, images, what = _inputs(args)
    options = sampler_kwargs(args)
    options.setdefault("sampler", "ancestral")
    rec = reconstruct(pipe, images, _parse_t(args.t), args.n, seed=args.seed, batch_size=args.batch_size,
                      progress=not args.no_progress, **options)
    n_img, n_t = rec.samples.shape[:2]
    rows = [np.concatenate([images[i][None], _uint8(rec.xt[i, j]), _uint8(rec.samples[i, j])])
            for i in range(n_img) for j in range(n_t)]
    out = args.out or (args.run_dir / "reconstruct.png")
    save_grid(np.concatenate(rows), out, nrow=args.n + 2)
    print(f"wrote {out} ({what}; rows t = {', '.join(map(str, rec.t))}: the image, x_t, {args.n} samples of "
          f"p(x0 | x_t) by {options['sampler']}; step {pipe.step})")
    if args.npz:
        _write_npz(args.npz, arr_0=_uint8(rec.samples), t=np.repeat(np.tile(rec.t, n_img), args.n))
    return 0


def _add_inpaint(sub) -> None:
    from ..edit import MASKS

    p = sub.add_parser("inpaint", help="fill in the masked part of images (RePaint)",
                       description="RePaint (Lugmayr et al. 2022) with the run's own model, no training for the "
                                   "task: at every reverse step the known pixels are replaced by a draw of "
                                   "q(x_t | x_0); with --resample R > 1 the chain jumps back --jump J steps and comes "
                                   "down again R - 1 times at every J-th step (about R x steps network evaluations). "
                                   "The mask's WHITE pixels are kept and come back exactly as given. One row per "
                                   "image: the image with its hole grey, then the inpaintings.")
    _add_inputs(p, "the inpaintings, uint8 (N n, H, W, C) under arr_0 (ADM layout; image-major)")
    p.add_argument("--mask", required=True,
                   help="a mask image of the model's size: WHITE pixels are KEPT, black ones filled in; or one of "
                        f"{', '.join(MASKS)}: the half (center: the central square of half the side) to fill in")
    p.add_argument("--n", type=int, default=4, help="inpaintings per image (default 4)")
    p.add_argument("--resample", type=int, default=1, metavar="R",
                   help="RePaint's resamplings U (default 1: plain replacement; the paper uses 10)")
    p.add_argument("--jump", type=int, default=1, metavar="J", help="RePaint's jump length (default 1; paper 10)")
    p.add_argument("--steps", type=int, help="reverse steps, uniformly respaced (default all T)")
    p.add_argument("--out", type=Path, help="PNG to write (default RUN_DIR/inpaint.png)")


def read_mask(spec: str, pipe) -> np.ndarray:
    """bool (H, W), True where kept: a named half, or a mask image (white kept) of the model's size with a hole."""
    from ..data.decode import read_image
    from ..edit import MASKS, named_mask

    if spec in MASKS:
        return named_mask(spec, pipe.image_size)
    if not Path(spec).is_file():
        raise UserError(f"--mask {spec!r}: no such mask image, and not one of {', '.join(MASKS)}")
    img, _ = read_image(Path(spec))
    grey = np.asarray(img.convert("L"))
    if grey.shape != (pipe.image_size, pipe.image_size):
        raise UserError(f"--mask {spec!r}: {grey.shape[1]}x{grey.shape[0]} pixels, but the model's images are "
                        f"{pipe.image_size}x{pipe.image_size}: draw the mask at that size")
    keep = grey >= 128
    if keep.all():
        raise UserError(f"--mask {spec!r}: all white, so no pixel is filled in: paint the hole black")
    return keep


def cmd_inpaint(args) -> int:
    from ..edit import inpaint
    from ..figures.grid import save_grid

    if args.n < 1 or args.resample < 1 or args.jump < 1:
        raise UserError("--n, --resample and --jump must be at least 1")
    pipe, images, what = _inputs(args)
    if args.steps is not None and not 1 <= args.steps <= pipe.diffusion.num_timesteps:
        raise UserError(f"--steps {args.steps}: must be between 1 and T = {pipe.diffusion.num_timesteps}")
    keep = read_mask(args.mask, pipe)
    filled = inpaint(pipe, images, keep, args.n, resample=args.resample, jump=args.jump, steps=args.steps,
                     seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress)
    shown = np.where(keep[None, :, :, None], images, np.uint8(128))
    rows = [np.concatenate([shown[i][None], _uint8(filled[i])]) for i in range(len(images))]
    out = args.out or (args.run_dir / "inpaint.png")
    save_grid(np.concatenate(rows), out, nrow=args.n + 1)
    print(f"wrote {out} ({what}; {int((~keep).sum())} of {keep.size} pixels filled in, {args.n} each; RePaint "
          f"R = {args.resample}, J = {args.jump}; step {pipe.step})")
    if args.npz:
        _write_npz(args.npz, arr_0=_uint8(filled))
    return 0


def _add_encode(sub) -> None:
    from ..edit import ENCODERS

    p = sub.add_parser("encode", help="encode images to x_T along the probability-flow ODE (DDIM inversion)",
                       description="Run the probability-flow ODE from x_0 to x_T with a deterministic solver, write "
                                   "the latents, decode them back with the same solver and print the round-trip "
                                   "error. `ddpm sample RUN --x-T FILE` decodes the latents.")
    add_run_options(p)
    p.add_argument("--image", required=True, help=IMAGE_HELP)
    p.add_argument("--data", help="take --image by index from this data set (e.g. digits)")
    p.add_argument("--split", default="test", help="the split --image indexes (default test)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--npz", type=Path, required=True,
                   help="the latents: float32 (N, C, H, W) under x_T, the images uint8 (N, H, W, C) under arr_0 "
                        "(ADM layout), and the solver's sampler, steps and spacing")
    p.add_argument("--sampler", choices=list(ENCODERS), help="ODE solver (default dpm++2m)")
    p.add_argument("--steps", type=int, help="solver steps K, each one network evaluation (default: the run's "
                                              "[sample] steps)")
    p.add_argument("--spacing", help="where the steps lie in t (default: the solver's own)")
    p.add_argument("--out", type=Path, help="PNG of the images above their round trip (default: none)")
    add_cache_options(p)
    add_class_options(p)


def cmd_encode(args) -> int:
    from ..edit import decode, encode, round_trip_error
    from ..edit.encode import encoder_settings

    pipe, images, what = _inputs(args)
    sampler, steps, spacing = encoder_settings(pipe, args.sampler, args.steps, args.spacing)
    options = dict(sampler=sampler, steps=steps, spacing=spacing, batch_size=args.batch_size,
                   progress=not args.no_progress)
    start = time.perf_counter()
    latents = encode(pipe, images, **options)
    mid = time.perf_counter()
    back = decode(pipe, latents, **options)
    end = time.perf_counter()
    _write_npz(args.npz, x_T=latents, arr_0=images, sampler=np.array(sampler), steps=np.array(steps),
               spacing=np.array(spacing))
    err = round_trip_error(images, back)
    print(f"encoded {what} with {sampler}, {steps} steps, {spacing} spacing ({steps} NFE each way): round trip "
          f"RMSE {err['rmse']:.3f}, max {err['max']:.0f} on the 0-255 scale; encode {mid - start:.2f} s, "
          f"decode {end - mid:.2f} s")
    if args.out:
        from ..figures.grid import save_grid

        save_grid(np.concatenate([images, _uint8(back)]), args.out, nrow=len(images))
        print(f"wrote {args.out} (the images above their round trip)")
    return 0


def decode_latents(args) -> int:
    """`ddpm sample RUN --x-T latents.npz`: decode the x_T of `ddpm encode` with its solver (or the one given)."""
    from ..edit import decode
    from ..figures.grid import save_grid

    try:
        with np.load(args.x_T) as f:
            latents, stored = f["x_T"], {k: f[k].item() for k in ("sampler", "steps", "spacing") if k in f}
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"--x-T {str(args.x_T)!r}: not a latents file of ddpm encode (x_T key) ({err})") from None
    pipe = guided_run(load_run(args), args, 1, 1)
    sampler, steps = args.sampler or stored.get("sampler"), args.steps or stored.get("steps")
    x0 = decode(pipe, latents, sampler=sampler, steps=None if steps is None else int(steps),
                spacing=args.spacing or stored.get("spacing"), batch_size=args.batch_size,
                progress=not args.no_progress)
    images = _uint8(x0)
    out = args.out or (args.run_dir / "sample_grid.png")
    save_grid(images, out)
    print(f"wrote {out} ({len(images)} images decoded from {args.x_T})")
    if args.npz:
        _write_npz(args.npz, arr_0=images)
    return 0


def register(sub) -> dict:
    _add_reconstruct(sub)
    _add_inpaint(sub)
    _add_encode(sub)
    return {"reconstruct": cmd_reconstruct, "inpaint": cmd_inpaint, "encode": cmd_encode}
