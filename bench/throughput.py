"""Speed side by side: ddpmkit against diffusers on the same U-Net, the same batch, the same machine.

    python bench/throughput.py                                   # both models; about 30 min on two CPU cores
    python bench/throughput.py --models mnist28 --rounds 2 --iters 2    # a few minutes
    python bench/throughput.py --models mnist28 --variants fp32,channels_last,compile   # ddpmkit's fast paths

Each measurement runs in its own fresh process (so that peak RSS is that implementation's alone), and the
processes alternate ours / theirs for --rounds rounds; every figure is the median over rounds, each round the
median of --iters timed repetitions after --warmup untimed ones.
  train    one full training step at --batch images: draw t and noise, forward, L_simple, backward, clip the
           gradient norm to 1, Adam, EMA update.
           ddpmkit: Trainer._train_step, the very code `ddpm train` runs, on in-memory random images.
           diffusers: UNet2DModel + DDPMScheduler.add_noise + F.mse_loss, torch Adam, clip_grad_norm_,
           diffusers.training_utils.EMAModel, as its train_unconditional example (fp32, its default).
  sample   network evaluations per second while sampling a batch of --batch images with --sample-steps
           ancestral steps: ddpmkit's respaced sampler, diffusers' DDPMPipeline with num_inference_steps. The
           seconds for one batch at 50 and 1000 steps are that rate times 50 and 1000 (both samplers spend all but
           a negligible part of each step in the network); for the small model the 50-step time is also measured.
  memory   peak resident set size of the process (ru_maxrss) after its training measurement.
  flops    the network's FLOPs in one training step (torch.utils.flop_counter, forward + backward) over our
           step time, against what a large fp32 and bf16 GEMM reaches on this machine.
  parts    in one process, milliseconds of the pieces around the network: one Adam step over the model's
           parameters as torch's per-tensor loop (its CPU default, what the diffusers side runs), foreach and fused
           (ddpmkit's choice); one EMA update, ddpmkit's foreach lerp against diffusers' EMAModel.step; and the
           network's forward pass alone (no grad) in GFLOP/s against the fp32 GEMM: how much room any
           implementation of this network has left on this machine.
Variants of ours (--variants): default (the shipped config: precision auto, which bf16 or fp32 by the CPU's
capability, ddpmkit/precision.py), fp32 (forced), channels_last, bf16 (autocast), compile (torch.compile), and
bf16_channels_last, bf16_compile. Sampling runs each variant's precision through ddpmkit.precision.under (the
network under autocast, the sampler's arithmetic fp32), as `ddpm sample` does.
Peers (--peers): diffusers fp32 (its default) and diffusers bf16: torch.autocast("cpu", torch.bfloat16) around
the U-Net's forward and the loss on the output cast to fp32, what accelerate's mixed_precision="bf16" does to the
train_unconditional recipe; for sampling, DDPMPipeline called under the same autocast.
--device cuda runs every measurement on the GPU (timings synchronised; memory is then torch's peak allocation on
the device, not the process's RSS); the default is the CPU, where all figures in docs/PERFORMANCE.md come from.

The networks: ddpmkit's presets (`cifar10`, the paper's 35.7M; `mnist28`) and diffusers' UNet2DModel laid out the
same (bench/quickstart_peers.diffusers_unet); the parameter counts are printed side by side.
References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Algorithms 1-2, App. B.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
T = 1000
VARIANTS = {"fp32": {}, "channels_last": {"channels_last": True}, "bf16": {"precision": "bf16"},
            "compile": {"compile": True}, "default": {"precision": "auto"},  # ours as shipped: `auto` decides
            "bf16_channels_last": {"precision": "bf16", "channels_last": True},
            "bf16_compile": {"precision": "bf16", "compile": True}}
PEERS = ("fp32", "bf16")  # diffusers' train_unconditional as is, and under accelerate's mixed_precision="bf16"
DEVICE = torch.device("cpu")  # the worker's device, from its job


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


# ---- the worker: one measurement in a fresh process -----------------------------------------------------------

def _timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - start)
    return times


def _ours_trainer(model: str, batch: int, variant: str, tmp: str):
    from ddpmkit.config import RunConfig
    from ddpmkit.data.dataset import ImageDataset
    from ddpmkit.models import PRESETS
    from ddpmkit.train.trainer import Trainer

    p = PRESETS[model]
    images = np.random.default_rng(0).integers(0, 256, (max(batch, 256), p["image_size"], p["image_size"],
                                                        p["in_channels"]), dtype=np.uint8)
    train = {"batch_size": batch, "warmup": 10, "precision": "fp32", **VARIANTS[variant]}
    config = RunConfig().with_values({"model.preset": model, **{f"train.{k}": v for k, v in train.items()}})
    return Trainer(config, tmp, device=str(DEVICE), progress=False, dataset=ImageDataset(images, None, "random"))


def _peer_autocast(variant: str):
    return torch.autocast(DEVICE.type, dtype=torch.bfloat16, enabled=variant == "bf16")


def _theirs(model: str, batch: int):
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel
    from quickstart_peers import diffusers_unet, with_geometry

    from ddpmkit.models import PRESETS

    p = with_geometry(PRESETS[model])
    torch.manual_seed(0)
    unet = diffusers_unet(p).to(DEVICE)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", variance_type="fixed_large")
    return p, unet, scheduler, EMAModel


def train_ours(model: str, batch: int, variant: str, warmup: int, iters: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = _ours_trainer(model, batch, variant, tmp)
        step = iter(range(10**9))
        times = _timed(lambda: trainer._train_step(next(step)), warmup, iters)
        return {"params": sum(p.numel() for p in trainer.model.parameters()), "times": times,
                "flops": _flops_ours(trainer) if variant == "fp32" else None}


def _flops_ours(trainer) -> int:
    """FLOPs of one training step's network forward + backward, by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        trainer._train_step(10**6)
    return int(counter.get_total_flops())


def train_theirs(model: str, batch: int, warmup: int, iters: int, variant: str = "fp32") -> dict:
    step, params = theirs_step(model, batch, variant)
    return {"params": params, "times": _timed(step, warmup, iters)}


def theirs_step(model: str, batch: int, variant: str = "fp32"):
    """(one training step of diffusers' train_unconditional recipe, its parameter count)."""
    import torch.nn.functional as F

    p, unet, scheduler, EMAModel = _theirs(model, batch)
    unet.train()
    opt = torch.optim.Adam(unet.parameters(), lr=2e-4)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    images = (torch.rand(max(batch, 256), p["in_channels"], p["image_size"], p["image_size"]) * 2 - 1).to(DEVICE)
    gen = torch.Generator().manual_seed(0)

    def step() -> None:
        x0 = images[torch.randint(0, len(images), (batch,), generator=gen).to(DEVICE)]
        noise = torch.randn(x0.shape, generator=gen).to(DEVICE)
        t = torch.randint(0, T, (batch,), generator=gen).to(DEVICE)
        with _peer_autocast(variant):  # accelerate's autocast wraps the model's forward alone
            out = unet(scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(out.float(), noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())

    return step, sum(q.numel() for q in unet.parameters())


def interleaved(args) -> int:
    """Training steps of every variant and peer in ONE process, one step each in turn (order reversed every
    round), after one untimed step each: the load of a shared machine then falls on all alike. Medians printed."""
    torch.set_num_threads(args.threads)
    steps, tmp = {}, tempfile.TemporaryDirectory()
    for model in args.models:
        for v in args.variants:
            trainer, counter = _ours_trainer(model, args.batch, v, tmp.name + f"/{model}_{v}"), iter(range(10**9))
            steps[f"{model} ddpmkit {v}"] = (lambda tr=trainer, c=counter: tr._train_step(next(c)))
        for v in args.peers:
            steps[f"{model} diffusers {v}"] = theirs_step(model, args.batch, v)[0]
    times = {label: [] for label in steps}
    for r in range(args.rounds + 1):
        for label in steps if r % 2 == 0 else reversed(list(steps)):
            t0 = time.perf_counter()
            steps[label]()
            _sync()
            if r:  # round 0 is the untimed warm-up
                times[label].append(time.perf_counter() - t0)
                print(f"   round {r}: {label}: {times[label][-1]:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    med = {label: statistics.median(t) for label, t in times.items()}
    if any("compile" in v for v in args.variants):
        print(inductor_report(), flush=True)
    for label, m in med.items():
        model = label.split()[0]
        ref = {p: med.get(f"{model} diffusers {p}") for p in args.peers}
        print(f"{label:<36} {m:8.2f} s/step  {args.batch / m:6.2f} img/s  "
              + "  ".join(f"x{ref[p] / m:.2f} vs diffusers {p}" for p in args.peers if ref[p]), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"times": times, "median": med, "args": {k: str(v) for k, v in vars(args).items()}},
                                    indent=1))
    tmp.cleanup()
    return 0


def inductor_report() -> str:
    """What torch.compile made of the compiled variants in this process (forward, backward and the optimizer's
    graphs together): inductor's IR nodes before fusion, the kernels it generated from them (each one a fused loop
    nest of elementwise ops and reductions: GroupNorm, SiLU, the residual adds, softmax, Adam's update), how many
    of those are vectorised C++, and the graph breaks. Convolutions and matmuls are not generated: they stay calls
    into oneDNN/MKL ("extern kernels"), so compile can only speed up what lies between them."""
    from torch._dynamo.utils import counters
    from torch._inductor import metrics

    breaks = sum(counters["graph_break"].values())
    return (f"inductor: {metrics.ir_nodes_pre_fusion} IR nodes before fusion -> {metrics.generated_kernel_count} "
            f"generated kernels ({metrics.generated_cpp_vec_kernel_count} vectorised C++), {breaks} graph breaks; "
            f"convolutions and matmuls stay oneDNN/MKL calls")


def sample_ours(model: str, batch: int, steps: int, variant: str, warmup: int, iters: int) -> dict:
    from ddpmkit.pipeline import build_diffusion

    with tempfile.TemporaryDirectory() as tmp:
        trainer = _ours_trainer(model, batch, variant, tmp)
        diffusion = build_diffusion(trainer.config)
        p = trainer.model.config
        shape = (batch, p["in_channels"], p["image_size"], p["image_size"])
        from ddpmkit.precision import decide, under

        net = trainer.ema.model
        if "channels_last" in variant:
            net = net.to(memory_format=torch.channels_last)
        if "compile" in variant:
            net = torch.compile(net)
        net = under(net, decide(trainer.config.train.precision, DEVICE))  # the network alone under autocast
        times = _timed(lambda: diffusion.sample(net, shape, steps=steps), warmup, iters)
    return {"times": times}


def sample_theirs(model: str, batch: int, steps: int, warmup: int, iters: int, variant: str = "fp32") -> dict:
    from diffusers import DDPMPipeline

    p, unet, scheduler, _ = _theirs(model, batch)
    pipe = DDPMPipeline(unet=unet.eval(), scheduler=scheduler).to(DEVICE)
    pipe.set_progress_bar_config(disable=True)
    def run():
        with _peer_autocast(variant):
            pipe(batch_size=batch, num_inference_steps=steps, output_type="np")

    return {"times": _timed(run, warmup, iters)}


def peak_gemm(dtype: torch.dtype, n: int = 2048, iters: int = 3) -> float:
    """FLOP/s of an n x n x n matmul in `dtype`, the best of `iters` (n = 1024 for bf16: a CPU without bf16 dot
    products emulates it, and a 2048^3 product takes minutes there)."""
    n = 1024 if dtype == torch.bfloat16 else n
    a, b = torch.randn(n, n, dtype=dtype, device=DEVICE), torch.randn(n, n, dtype=dtype, device=DEVICE)
    a @ b
    best = min(_timed(lambda: a @ b, 1, iters))
    return 2 * n**3 / best


def parts(model: str, batch: int, warmup: int, iters: int) -> dict:
    """Milliseconds of Adam (three kernels) and EMA (two implementations), and the forward pass's GFLOP/s."""
    from diffusers.training_utils import EMAModel
    from torch.utils.flop_counter import FlopCounterMode

    from ddpmkit.models import UNet
    from ddpmkit.train.ema import EMA

    net = UNet.from_preset(model).to(DEVICE)
    for q in net.parameters():
        q.grad = torch.randn_like(q) * 1e-3
    out = {}
    for name, flags in {"adam_loop": dict(foreach=False), "adam_foreach": dict(foreach=True),
                        "adam_fused": dict(fused=True)}.items():
        if DEVICE.type == "cuda" and name == "adam_loop":
            flags = dict(foreach=False, fused=False)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, **flags)
        out[name] = 1e3 * statistics.median(_timed(opt.step, warmup, iters))
    ours = EMA(net, 0.9999)
    step = iter(range(10**9))
    out["ema_ddpmkit"] = 1e3 * statistics.median(_timed(lambda: ours.update(net, next(step)), warmup, iters))
    theirs = EMAModel(net.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    out["ema_diffusers"] = 1e3 * statistics.median(_timed(lambda: theirs.step(net.parameters()), warmup, iters))
    c = net.config
    x = torch.randn(batch, c["in_channels"], c["image_size"], c["image_size"], device=DEVICE)
    t = torch.full((batch,), 500, device=DEVICE)
    net.eval()
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            net(x, t)
        seconds = statistics.median(_timed(lambda: net(x, t), warmup, iters))
    out["forward_gflops"] = counter.get_total_flops() / seconds / 1e9
    out["forward_gflop"] = counter.get_total_flops() / 1e9
    return out


def worker(job: dict) -> dict:
    global DEVICE
    DEVICE = torch.device(job.get("device", "cpu"))
    torch.set_num_threads(job["threads"])
    torch.manual_seed(0)
    kind, impl = job["kind"], job["impl"]
    if kind == "gemm":
        return {"fp32": peak_gemm(torch.float32), "bf16": peak_gemm(torch.bfloat16)}
    if kind == "parts":
        return parts(job["model"], job["batch"], job["warmup"], max(job["iters"], 3))
    args = (job["model"], job["batch"])
    if kind == "train":
        out = (train_ours(*args, job["variant"], job["warmup"], job["iters"]) if impl == "ddpmkit"
               else train_theirs(*args, job["warmup"], job["iters"], job["variant"]))
    else:
        out = (sample_ours(*args, job["steps"], job["variant"], job["warmup"], job["iters"]) if impl == "ddpmkit"
               else sample_theirs(*args, job["steps"], job["warmup"], job["iters"], job["variant"]))
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if DEVICE.type == "cuda":  # the memory that matters there: torch's peak allocation on the GPU
        out["peak_rss_mb"] = torch.cuda.max_memory_allocated(DEVICE) / 2**20
        out["gpu"] = torch.cuda.get_device_name(DEVICE)
    return out


# ---- the driver -----------------------------------------------------------------------------------------------

def run_job(job: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise RuntimeError(f"worker {job} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median_over_rounds(results: list[dict]) -> dict:
    per_round = [statistics.median(r["times"]) for r in results]
    return {"seconds": statistics.median(per_round), "seconds_per_round": per_round,
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in results),
            **{k: results[0][k] for k in ("params", "flops") if results[0].get(k) is not None}}


def measure(args, model: str, kind: str, steps: int | None = None) -> dict:
    """{label: summary} for ours in each variant and for diffusers, alternating by round."""
    base = dict(kind=kind, model=model, batch=args.batch, threads=args.threads, warmup=args.warmup,
                iters=args.iters, steps=steps, device=args.device)
    labels = [(f"ddpmkit {v}", dict(base, impl="ddpmkit", variant=v)) for v in args.variants]
    labels += [(f"diffusers {v}", dict(base, impl="diffusers", variant=v)) for v in args.peers]
    raw = {label: [] for label, _ in labels}
    for r in range(args.rounds):
        for label, job in labels if r % 2 == 0 else reversed(labels):
            raw[label].append(run_job(job))
            print(f"   {model} {kind} round {r + 1}: {label}: {statistics.median(raw[label][-1]['times']):.3f} s"
                  f" (load {os.getloadavg()[0]:.1f})",
                  flush=True)
    return {label: median_over_rounds(runs) for label, runs in raw.items()}


def report(model: str, train: dict, sample: dict, parts_result: dict | None, gemm: dict, args) -> list[str]:
    theirs_t, theirs_s = train["diffusers fp32"], sample["diffusers fp32"]
    bf16_t, bf16_s = train.get("diffusers bf16"), sample.get("diffusers bf16")
    ours_fp32 = sample.get("ddpmkit fp32")
    lines = [f"\n== {model}, batch {args.batch}, {args.threads} threads",
             f"parameters: ddpmkit {next(iter(train.values()))['params']:,}, diffusers {theirs_t['params']:,}",
             f"{'':<26} {'train img/s':>11} {'vs dfp32':>8} {'vs dbf16':>8} {'peak RSS MB':>11} {'ratio':>6} "
             f"{'sample evals/s':>14} {'vs dfp32':>8} {'vs dbf16':>8} {'vs ofp32':>8} {'s/batch@50':>10}"]
    ratio = (lambda ref, x: f"{ref['seconds'] / x['seconds']:>8.2f}" if ref else f"{'':>8}")
    for label in train:
        tr, sa = train[label], sample[label]
        ips, evals = args.batch / tr["seconds"], args.sample_steps / sa["seconds"]
        lines.append(f"{label:<26} {ips:>11.2f} {ratio(theirs_t, tr)} {ratio(bf16_t, tr)} "
                     f"{tr['peak_rss_mb']:>11.0f} {tr['peak_rss_mb'] / theirs_t['peak_rss_mb']:>6.2f} "
                     f"{evals:>14.3f} {ratio(theirs_s, sa)} {ratio(bf16_s, sa)} {ratio(ours_fp32, sa)} "
                     f"{50 / evals:>10.1f}")
    flops = train.get("ddpmkit fp32", {}).get("flops")
    if flops:
        achieved = flops / train["ddpmkit fp32"]["seconds"]
        lines.append(f"ddpmkit fp32 step: {flops / 1e9:.1f} GFLOP (network forward + backward) -> "
                     f"{achieved / 1e9:.1f} GFLOP/s = {achieved / gemm['fp32']:.0%} of a 2048^3 fp32 GEMM "
                     f"({gemm['fp32'] / 1e9:.1f} GFLOP/s), {achieved / gemm['bf16']:.0%} of a 1024^3 bf16 GEMM "
                     f"({gemm['bf16'] / 1e9:.1f} GFLOP/s)")
    lines.append("vs dfp32 / dbf16 / ofp32: speed-up over diffusers fp32 / diffusers bf16 / ddpmkit fp32 (higher is "
                 "better); peak RSS ratio over diffusers fp32 (lower is better); sampling rate from "
                 f"{args.sample_steps}-step runs")
    pt = parts_result
    if pt:
        lines.append(f"parts (ms): Adam per-tensor loop {pt['adam_loop']:.1f}, foreach {pt['adam_foreach']:.1f}, "
                     f"fused {pt['adam_fused']:.1f} (ddpmkit); EMA update ddpmkit {pt['ema_ddpmkit']:.1f}, "
                     f"diffusers EMAModel {pt['ema_diffusers']:.1f}")
        lines.append(f"forward pass alone: {pt['forward_gflop']:.1f} GFLOP at {pt['forward_gflops']:.1f} GFLOP/s = "
                     f"{pt['forward_gflops'] * 1e9 / gemm['fp32']:.0%} of the fp32 GEMM")
    return lines


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="mnist28,cifar10")
    parser.add_argument("--variants", default="default,fp32", help=f"of ours: {','.join(VARIANTS)}")
    parser.add_argument("--peers", default="fp32,bf16", help="diffusers' recipe in fp32 and/or bf16 autocast")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed repetitions per process")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repetitions first")
    parser.add_argument("--sample-steps", type=int, default=10, help="ancestral steps per timed sampling run")
    parser.add_argument("--json", type=Path, default=HERE / "out" / "throughput.json")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    parser.add_argument("--no-parts", action="store_true", help="skip the Adam/EMA/forward breakdown")
    parser.add_argument("--kinds", default="train,sample", help="train and/or sample (the table needs both)")
    parser.add_argument("--interleave", action="store_true",
                        help="training steps of all variants and peers in one process, in turns (no memory figures)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here; use --device cpu")
    args.models = [m for m in args.models.split(",") if m]
    args.variants = [v for v in args.variants.split(",") if v]
    args.peers = [v for v in args.peers.split(",") if v]
    if "fp32" not in args.peers or set(args.peers) - set(PEERS):
        parser.error(f"--peers {','.join(args.peers)}: choose from {','.join(PEERS)}, including fp32")
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad or not args.variants:
        parser.error(f"--variants {','.join(args.variants)}: choose from {','.join(VARIANTS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.interleave:
        print(f"interleaved in one process, {args.threads} thread(s); load average {os.getloadavg()[0]:.2f}")
        return interleaved(args)
    from importlib.metadata import version

    print(f"torch {torch.__version__}, diffusers {version('diffusers')}, {platform.processor() or platform.machine()}"
          f", {os.cpu_count()} cores, {args.threads} threads; load average {os.getloadavg()[0]:.2f}", flush=True)
    gemm = run_job({"kind": "gemm", "impl": "", "threads": args.threads, "device": args.device})
    out, lines = {"gemm": gemm, "args": {k: str(v) for k, v in vars(args).items()}}, []
    for model in args.models:
        train = measure(args, model, "train") if "train" in args.kinds else {}
        sample = measure(args, model, "sample", steps=args.sample_steps) if "sample" in args.kinds else {}
        if not (train and sample):  # one kind only: the per-round lines above and the JSON hold the figures
            out[model] = {"train": train, "sample": sample}
            continue
        pieces = None if args.no_parts else run_job(dict(kind="parts", impl="", model=model, batch=args.batch,
                                                         threads=args.threads, warmup=args.warmup,
                                                         iters=args.iters, device=args.device))
        out[model] = {"train": train, "sample": sample, "parts": pieces}
        lines += report(model, train, sample, pieces, gemm, args)
        print("\n".join(lines[-(len(train) + 7):]), flush=True)
    if len(args.models) > 1:
        print("\n".join(lines))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=1))
    print(f"load average at the end {os.getloadavg()[0]:.2f}; all numbers in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
