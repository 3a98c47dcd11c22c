"""The paper's CIFAR-10 network through `ddpm import-diffusers`: one NFE timed, and the cost of Tables 1 and 2.

    python bench/paper_weights.py --threads 1                  # timing only: a minute or two
    python bench/paper_weights.py --threads 2 --batches 1,8
    python bench/paper_weights.py --threads 1 --e2e            # also the whole CLI path: about 2000 NFEs more

No weights are downloaded: the network is diffusers' UNet2DModel built from google/ddpm-cifar10-32's config.json
and scheduler_config.json (tests/store/dm_folders.py holds them), randomly initialised, saved by diffusers in the
flat layout of that repository and imported with `ddpm import-diffusers`, so the timed network is exactly the one
the real weights would give (35,746,307 parameters). Its output is checked against diffusers' on the same input.

Timing: one network evaluation (NFE) at each --batches size, --iters timed repetitions after one warm-up, median;
FLOPs of one NFE per image from torch.utils.flop_counter. The projections multiply the best per-image NFE time:
    FID / IS [DDPM Table 1]: 50,000 samples x 1000 steps of Algorithm 2 = 5e7 image-NFEs (Inception: negligible)
    NLL      [DDPM Table 2]: the whole bound, T = 1000 terms each one NFE: 10,000 test images = 1e7 image-NFEs,
                             50,000 train images = 5e7.
--e2e then runs the imported run through the CLI on this random network: sample (10 respaced steps), eval --metrics
nll on one random image (the full 1000-term bound), trajectory (Algorithm 2, all 1000 steps, one sample),
interpolate (t = 10) and rate-distortion from eval's terms.
References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Tables 1-2, App. B.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "store"))
JOBS = {"FID/IS: 50,000 samples x 1000 steps": 5e7, "NLL test set: 10,000 images x 1000 terms": 1e7,
        "NLL train set: 50,000 images x 1000 terms": 5e7}


def _args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batches", default="1,8,32", help="comma list of batch sizes to time (default 1,8,32)")
    p.add_argument("--iters", type=int, default=3, help="timed repetitions per batch size (default 3)")
    p.add_argument("--e2e", action="store_true", help="also run the imported run through the CLI end to end")
    p.add_argument("--keep", type=Path, help="write the folders here instead of a temporary directory")
    args = p.parse_args(argv)
    try:
        args.batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        p.error(f"--batches {args.batches}: expected a comma list of integers")
    if args.threads < 1 or args.iters < 1 or min(args.batches) < 1:
        p.error("--threads, --iters and every batch size must be at least 1")
    return args


def _import(root: Path):
    """google/ddpm-cifar10-32's config, random weights, saved by diffusers, imported by ddpmkit's CLI."""
    from dm_folders import CIFAR10_SCHEDULER, CIFAR10_UNET, save_diffusers

    from ddpmkit.cli import main

    theirs = save_diffusers(root / "ddpm-cifar10-32", CIFAR10_UNET, CIFAR10_SCHEDULER, "flat")
    t0 = time.perf_counter()
    assert main(["import-diffusers", str(root / "ddpm-cifar10-32"), "--out", str(root / "run")]) == 0
    print(f"import: {time.perf_counter() - t0:.1f} s")
    return theirs


def _nfe_seconds(model, batch: int, iters: int) -> float:
    x, t = torch.randn(batch, 3, 32, 32), torch.randint(0, 1000, (batch,))
    with torch.no_grad():
        model(x, t)  # warm-up
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            model(x, t)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _flops(model) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32), torch.tensor([500]))
    return float(counter.get_total_flops())


def _e2e(root: Path) -> None:
    from ddpmkit.cli import main

    run, common = str(root / "run"), ["--device", "cpu", "--no-progress"]
    rng = np.random.default_rng(0)
    np.savez(root / "images.npz", arr_0=rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8))
    data = str(root / "images.npz")
    steps = [("sample", ["sample", run, "--n", "2", "--steps", "10", *common]),
             ("eval nll", ["eval", run, "--data", data, "--split", "all", "--metrics", "nll", "--nll-n", "1",
                           *common]),
             ("trajectory", ["trajectory", run, "--n", "1", "--columns", "5", "--batch-size", "1", *common]),
             ("interpolate", ["interpolate", run, "--data", data, "--split", "all", "--a", "0", "--b", "1", "--t",
                              "10", "--lambdas", "3", *common]),
             ("rate-distortion", ["rate-distortion", run, "--terms", str(root / "run" / "nll_terms.npz"), *common])]
    for name, argv in steps:
        t0 = time.perf_counter()
        code = main(argv)
        print(f"e2e {name}: exit {code}, {time.perf_counter() - t0:.1f} s")
        if code != 0:
            raise SystemExit(f"ddpm {' '.join(argv)} failed")


def main(argv=None) -> None:
    args = _args(argv)
    torch.set_num_threads(args.threads)
    import ddpmkit

    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        theirs = _import(root)
        pipe = ddpmkit.load(root / "run", device="cpu")
        n_params = sum(p.numel() for p in pipe.model.parameters())
        x, t = torch.randn(2, 3, 32, 32), torch.tensor([3, 900])
        with torch.no_grad():
            diff = (pipe.model(x, t) - theirs(x, t).sample).abs().max().item()
        flops = _flops(pipe.model)
        with torch.device("meta"):
            counts = {name: sum(p.numel() for p in ddpmkit.UNet.from_preset(name).parameters())
                      for name in ("cifar10", "celebahq256", "lsun256")}
        print("presets: " + ", ".join(f"{k} {v:,} parameters" for k, v in counts.items()) +
              " (the paper: 35.7M and 114M [DDPM App. B])")
        print(f"network: {n_params:,} parameters; max |ddpmkit - diffusers| output {diff:.2e}; "
              f"{flops / 1e9:.2f} GFLOP per image-NFE; torch {torch.__version__}, {args.threads} thread(s)")
        best = None
        for batch in args.batches:
            sec = _nfe_seconds(pipe.model, batch, args.iters)
            per = sec / batch
            best = per if best is None else min(best, per)
            print(f"batch {batch:4d}: one NFE {sec * 1000:9.1f} ms, {per * 1000:8.1f} ms per image, "
                  f"{flops * batch / sec / 1e9:6.1f} GFLOP/s")
        print(f"projections at {best * 1000:.1f} ms per image-NFE ({args.threads} thread(s) of this CPU):")
        for job, image_nfes in JOBS.items():
            s = image_nfes * best
            print(f"  {job}: {image_nfes:.0e} image-NFEs = {s / 3600:,.0f} h = {s / 86400 / 365:.2f} years")
        print(f"  FLOPs of the FID/IS job: {5e7 * flops:.2e}; at 100 TFLOP/s sustained (an assumption, not "
              f"measured: no GPU here) that is {5e7 * flops / 1e14 / 3600:.1f} h")
        if args.e2e:
            _e2e(root)


if __name__ == "__main__":
    main()
