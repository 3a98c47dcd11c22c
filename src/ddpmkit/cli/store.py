"""`ddpm import-diffusers` and `ddpm export-diffusers`: diffusers' DDPM folders to and from run directories."""

from __future__ import annotations

from pathlib import Path


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


def cmd_import_diffusers(args) -> int:
    from ..store.diffusers_io import import_diffusers

    result = import_diffusers(args.dir, args.out, data=args.data)
    d, m = result["config"].diffusion, result["config"].model
    print(f"imported {args.dir} ({result['layout']} layout, {result['tensors']} tensors, "
          f"{result['parameters']:,} parameters) as model and EMA weights")
    print(f"network: preset {m.preset}, ch {m.ch}, ch_mult {tuple(m.ch_mult)}, attention at {tuple(m.attn_resolutions)}"
          f"; process: {d.schedule} T={d.timesteps}, {d.parameterization}, {d.variance}")
    print(f"wrote {result['checkpoint']}; try: ddpm sample {args.out}")
    return 0


def cmd_export_diffusers(args) -> int:
    from ..store.diffusers_io import export_diffusers

    result = export_diffusers(args.run_dir, args.out, ema=not args.no_ema)
    print(f"exported {result['weights']} weights of step {result['step']} ({result['parameters']:,} parameters) "
          f"to {result['out']}: load with diffusers.DDPMPipeline.from_pretrained({str(result['out'])!r})")
    return 0


def register(sub) -> dict:
    _add_diffusers(sub)
    return {"import-diffusers": cmd_import_diffusers, "export-diffusers": cmd_export_diffusers}
