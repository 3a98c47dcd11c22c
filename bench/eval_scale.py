"""Long sampling and evaluation jobs (ddpmkit.jobs): 1 against 2 processes, the seed-per-image rule's cost, a kill
and resume, and the paper's 50k FID job projected to 1, 8 and 64 GPUs.

    nice -n 10 python bench/eval_scale.py --threads 1 > bench/out/eval_scale.log 2>&1 &   # ~12 CPU-minutes here
    python bench/eval_scale.py --threads 1 --parts seed,kill       # parts: scale, seed, kill, project
    python bench/eval_scale.py --threads 1 --n 50000 --nll-n 297 --steps 1000 --sampler ancestral  # the full size

What it runs, on the `digits` preset (8x8 grey, a 1,001,729-parameter U-Net, T = 1000) with random weights (speed and
identity do not depend on the weights; FID values of a random network mean nothing) and a digits classifier
(`ddpm train-classifier --steps 100`) as the FID feature space:
  1. `ddpm sample RUN --n N --npz` in 1 process and under `torchrun --nproc_per_node 2` (gloo): wall time,
     images/s over the wall time (start-up included), and whether the two .npz files are identical.
  2. `ddpm eval RUN --metrics fid,nll` the same way: wall time and whether fid and nll_bpd are identical.
  3. The seed-per-image rule against one batched generator, in this process, best of --repeats taken in turns:
     Pipeline.sample (one torch.Generator for the batch) against the job (ddpmkit.noise.ImageNoise, one stream per
     image) for ancestral (noise at every step) and dpm++2m (noise for x_T only); the bound's vlb_terms with one
     generator against ImageNoise; the draw alone at 8x8x1 and 32x32x3, and one network evaluation for scale.
  4. A kill and resume: `ddpm sample` (1 process) uninterrupted, then again SIGKILLed at a random moment within
     about one batch after its first shard appeared, then the same command again: wall times, images kept from the
     shards, images drawn again, and whether the result is identical to the uninterrupted one.
  5. One NFE of the paper's `cifar10` network on this CPU (batch 4), and the projection of the 50k FID job.
Each process runs --threads threads. Every number printed is measured here, except the GPU rates of step 5, whose
source is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))


def make_run(out: Path, threads: int) -> tuple[Path, Path]:
    """A digits-preset run with random weights, and a digits classifier (100 steps) for the FID features."""
    from ddpmkit import UNet
    from ddpmkit.config import RunConfig
    from ddpmkit.store import write_run

    run, clf = out / "run", out / "clf.safetensors"
    if not run.exists():
        config = RunConfig().with_values({"model.preset": "digits"})
        torch.manual_seed(0)
        net = UNet.from_preset("digits")
        write_run(run, config, {"image_size": 8, "channels": 1, "data": {"name": "digits"}},
                  {"model": net.state_dict(), "ema": net.state_dict()})
    if not clf.exists():
        cli(["train-classifier", "--data", "digits", "--out", str(clf), "--steps", "100", "--no-progress"], threads)
    return run, clf


def cli(args: list[str], threads: int, procs: int = 1, check: bool = True) -> float:
    """Run `ddpm ARGS` (under torchrun with procs > 1); its wall time in seconds."""
    head = [PY, "-m", "ddpmkit.cli"]
    if procs > 1:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        head = [TORCHRUN, "--nproc_per_node", str(procs), "--master_port", str(port), "-m", "ddpmkit.cli", "--"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    proc = subprocess.run(head + args, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(args)}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def npz(path: Path) -> np.ndarray:
    with np.load(path) as f:
        return f["arr_0"]


def sample_args(a, run: Path, npz_path: Path) -> list[str]:
    return ["sample", str(run), "--n", str(a.n), "--sampler", a.sampler, "--steps", str(a.steps), "--batch-size",
            str(a.batch_size), "--npz", str(npz_path), "--out", str(npz_path.with_suffix(".png")), "--no-progress"]


def one_against_two(a, run: Path, clf: Path, out: Path) -> None:
    s_args = lambda p: sample_args(a, run, p)  # noqa: E731
    e_args = lambda p: ["eval", str(run), "--metrics", "fid,nll", "--features", str(clf), "--n", str(a.n),  # noqa
                        "--nll-n", str(a.nll_n), "--sampler", a.sampler, "--steps", str(a.steps), "--batch-size",
                        str(a.batch_size), "--json", str(p), "--no-progress"]
    r = {}
    for procs in (1, 2):
        r[f"sample_{procs}"] = cli(s_args(out / f"s{procs}.npz"), a.threads, procs)
        print(f"ddpm sample, {procs} process(es): {r[f'sample_{procs}']:.1f} s, "
              f"{a.n / r[f'sample_{procs}']:.1f} images/s (wall time, start-up included)", flush=True)
    same = np.array_equal(npz(out / "s1.npz"), npz(out / "s2.npz"))
    print(f"  images identical (1 vs 2 processes, batch {a.batch_size}): {same}")
    for procs in (1, 2):
        r[f"eval_{procs}"] = cli(e_args(out / f"e{procs}.json"), a.threads, procs)
        print(f"ddpm eval --metrics fid,nll, {procs} process(es): {r[f'eval_{procs}']:.1f} s", flush=True)
    e1, e2 = (json.loads((out / f"e{p}.json").read_text()) for p in (1, 2))
    print(f"  fid {e1['fid']!r} / {e2['fid']!r}, nll_bpd {e1['nll_bpd']!r} / {e2['nll_bpd']!r}: identical "
          f"{(e1['fid'], e1['nll_bpd']) == (e2['fid'], e2['nll_bpd'])}")


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def interleaved(a_fn, b_fn, repeats: int) -> tuple[float, float]:
    """The best of `repeats` timings of each, taken in turns (A B A B ...) so that a change of load hits both."""
    a = b = float("inf")
    for _ in range(repeats):
        a, b = min(a, timed(a_fn)), min(b, timed(b_fn))
    return a, b


def seed_rule_cost(a, run: Path) -> None:
    import ddpmkit
    from ddpmkit.jobs import run_job, sample_job
    from ddpmkit.noise import ImageNoise

    pipe = ddpmkit.load(run, device="cpu")
    n, r = a.seed_n, a.repeats
    for sampler in ("ancestral", "dpm++2m"):
        kw = dict(sampler=sampler, steps=a.steps, batch_size=a.batch_size)
        batched, per_image = interleaved(lambda: pipe.sample(n, seed=0, **kw),
                                         lambda: run_job(sample_job(pipe, n, seed=0, **kw)), r)
        print(f"seed per image, {sampler} {a.steps} steps, {n} images, batch {a.batch_size}, best of {r} in turns: "
              f"one generator {batched:.2f} s, per image {per_image:.2f} s ({100 * (per_image / batched - 1):+.1f}%)",
              flush=True)
    x0 = torch.rand(a.bound_n, 1, 8, 8) * 2 - 1
    d, m = pipe.diffusion, pipe.model
    one, per = interleaved(lambda: d.vlb_terms(m, x0, generator=torch.Generator().manual_seed(0)),
                           lambda: d.vlb_terms(m, x0, generator=ImageNoise(0, range(a.bound_n))), r)
    print(f"seed per image, the bound (T = {d.num_timesteps}) of {a.bound_n} images in one batch, best of {r} in "
          f"turns: one generator {one:.2f} s, per image {per:.2f} s ({100 * (per / one - 1):+.1f}%)")
    x = torch.randn(a.batch_size, 1, 8, 8)
    nfe = timed(lambda: m(x, torch.zeros(a.batch_size, dtype=torch.int64)), 5) / a.batch_size
    print(f"  one digits-network evaluation: {nfe * 1e3:.2f} ms per image (batch {a.batch_size})")
    setup = timed(lambda: ImageNoise(0, range(256)), 5) / 256
    print(f"  ImageNoise set-up (a generator seeded per image): {setup * 1e6:.1f} us per image")
    for shape in ((256, 1, 8, 8), (256, 3, 32, 32)):
        g, noise = torch.Generator().manual_seed(0), ImageNoise(0, range(shape[0]))
        one = timed(lambda: torch.randn(shape, generator=g), 20)
        per = timed(lambda: noise.randn(shape), 20)
        print(f"  one draw of {shape}: batched {one * 1e3:.3f} ms, per image {per * 1e3:.3f} ms "
              f"({(per - one) / shape[0] * 1e6:.1f} us more per image per draw)")


def kill_and_resume(a, s_args, out: Path) -> None:
    """SIGKILL at a random moment within the second batch (after the first shard appears), then the same command."""
    path, shards = out / "k.npz", out / "k.npz.shards"
    uninterrupted = cli(s_args(out / "u.npz"), a.threads)  # the reference time, under the load of now
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    start = time.perf_counter()
    proc = subprocess.Popen([PY, "-m", "ddpmkit.cli", *s_args(path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while not list(shards.glob("*/*.npz")) and proc.poll() is None:
        time.sleep(0.01)
    first = time.perf_counter() - start
    batch_time = uninterrupted / (a.n / a.batch_size)  # rough: start-up included
    time.sleep(random.Random(a.seed).uniform(0.0, 1.0) * batch_time)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = time.perf_counter() - start
    kept = sum(int(p.stem[10:]) - int(p.stem[:9]) for p in shards.glob("*/*.npz"))
    resumed = cli(s_args(path), a.threads)
    same = np.array_equal(npz(path), npz(out / "u.npz"))
    print(f"kill and resume: uninterrupted {uninterrupted:.1f} s; a second run killed {killed:.1f} s after its "
          f"start ({killed - first:.1f} s after its first shard) with {kept} of {a.n} images in shards; the same "
          f"command again {resumed:.1f} s, {a.n - kept} images drawn; total {killed + resumed:.1f} s "
          f"({killed + resumed - uninterrupted:+.1f} s); identical to the uninterrupted images: {same}")


def projection(a) -> None:
    from ddpmkit import UNet

    net = UNet.from_preset("cifar10").eval()
    x, t = torch.randn(4, 3, 32, 32), torch.randint(0, 1000, (4,))
    with torch.no_grad():
        net(x, t)
        per = timed(lambda: net(x, t), 2) / 4
    print(f"cifar10 network on this CPU, {a.threads} thread(s), batch 4: {per * 1e3:.0f} ms per image-NFE")
    rates = {"this CPU, one process per core (measured above)": per,
             "a GPU at 1.22 ms per image-NFE (issue 20's user report: 50k x 1000 steps in about 17 h on one GPU)":
                 17 * 3600 / 5e7,
             "a GPU at 0.12 ms per image-NFE (12.11 GFLOP per image-NFE, docs/RESULTS.md, at an assumed 100 "
             "TFLOP/s)": 12.11e9 / 100e12}
    for nfe, what in ((1000, "Algorithm 2, 1000 steps (the paper's)"), (20, "dpm++2m, 20 steps (the default)")):
        image_nfes = 50_000 * nfe
        print(f"50k FID job, {what}: {image_nfes:.0e} image-NFEs; wall = image-NFEs x s per image-NFE / K")
        for name, sec in rates.items():
            cells = ", ".join(f"K={k}: {image_nfes * sec / k / 3600:,.2f} h" for k in (1, 8, 64))
            print(f"  {name}: {cells}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=256, help="samples (default 256; the paper: 50000)")
    p.add_argument("--nll-n", type=int, default=8, help="test images for the bound (default 8; all: 297)")
    p.add_argument("--bound-n", type=int, default=4, help="images of the in-process bound timing")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="dpm++2m")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="of the kill moment")
    p.add_argument("--seed-n", type=int, default=128, help="images of the in-process seed-rule timing")
    p.add_argument("--repeats", type=int, default=2, help="timings of each variant in the seed-rule part")
    p.add_argument("--parts", default="scale,seed,kill,project")
    p.add_argument("--out", type=Path, default=HERE / "out" / "eval_scale")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    print(f"{open('/proc/cpuinfo').read().split('model name')[1].split(chr(10))[0].split(':', 1)[1].strip()}; torch "
          f"{torch.__version__}; {a.threads} thread(s) per process; load: {os.getloadavg()}", flush=True)
    run, clf = make_run(a.out, a.threads)
    parts = set(a.parts.split(","))
    if "scale" in parts:
        one_against_two(a, run, clf, a.out)
    if "seed" in parts:
        seed_rule_cost(a, run)
    if "kill" in parts:
        kill_and_resume(a, lambda p: sample_args(a, run, p), a.out)
    if "project" in parts:
        projection(a)
    print(f"load at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
