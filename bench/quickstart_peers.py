"""Train the two best-known peer DDPM implementations on the built-in digits for a fixed wall-clock budget.

    python bench/quickstart_peers.py --minutes 5 --threads 2          # both peers: 10 min training + sampling
    python bench/quickstart_peers.py --peers diffusers --minutes 0.2 --n-samples 64 --threads 1   # a smoke run

Peers, each set up as the paper [DDPM Sec. 4]: T = 1000, linear betas 1e-4 .. 0.02, epsilon prediction,
L_simple, and each one's own full 1000-step ancestral sampler with x0 clipped to [-1, 1]:
  diffusers   UNet2DModel + DDPMScheduler (variance_type fixed_large, as the paper's samples) + DDPMPipeline.
  lucidrains  denoising-diffusion-pytorch's Unet + GaussianDiffusion (objective pred_noise, linear schedule).
              Its sampler always uses the posterior variance beta_tilde (the paper's "fixed_small"); it has no
              option for fixed_large. Only Unet and GaussianDiffusion are used: its Trainer needs torchvision,
              whose PyPI build cannot load beside a CPU-only torch, so this script imports the package without
              torchvision (a stand-in module for the two names it imports at the top, removed right after).
The networks follow ddpmkit's `digits` preset (ch, ch_mult, num_res_blocks, attention at 4x4); the printed
parameter counts say how close each one is. Training follows ddpmkit's digits.toml [train] (batch size, Adam lr,
linear warm-up, gradient clipping, EMA decay with the (1 + n) / (10 + n) warm-up) where that file exists, else
batch 64 and Adam 1e-3 with the other values as printed. Every peer gets the same data order, seed and budget;
the peers train in turns, one step each, each on its own clock, so that all see the same load on a shared machine
(CPU seconds are printed too). It trains on the digits' "train" split (the first 1500, as `ddpm train`) by
default, or on all 1797 with --split all. Sampling is the slow part (256 images x 1000 network calls per peer,
timed and printed); on busy shared cores it takes far longer than the training budget.

Writes <out>/<peer>_grid.png, <out>/<peer>_samples.npz (uint8 (N, 8, 8, 1), key arr_0), <out>/real_grid.png
(real digits, for the eye) and <out>/peers_results.json, and prints steps, images/s and bench/digits_score.py's
scores. Every figure printed is measured in this run.

References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Algorithms 1-2, Sec. 4, App. B.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import os
import sys
import time
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import ddpmkit
from ddpmkit.data import from_model_range, load_dataset, to_model_range
from ddpmkit.figures.grid import save_grid
from ddpmkit.models import PRESETS, UNet

sys.path.insert(0, str(Path(__file__).resolve().parent))
from digits_score import format_table, score  # noqa: E402  (a sibling script, not a package)

PEERS = ("diffusers", "lucidrains")
T = 1000  # [DDPM Sec. 4]
BETA_START, BETA_END = 1e-4, 0.02  # linear schedule [DDPM Sec. 4]
CONFIG_PATH = Path(ddpmkit.__file__).parent / "configs" / "digits.toml"
FALLBACK_TRAIN = dict(batch_size=64, lr=1e-3, warmup=0, grad_clip=1.0, ema_decay=0.9999, ema_warmup=True, seed=0)


class UserError(Exception):
    """A bad option or a missing peer package: one line, exit code 2."""


@dataclass
class Peer:
    """One peer ready to train: its trainable module, L_simple on a batch, the EMA step and the sampler."""

    name: str
    model: torch.nn.Module  # holds every trained parameter
    net_params: int  # parameters of the noise-prediction network alone
    loss: Callable[[torch.Tensor], torch.Tensor]  # x0 (B, 1, 8, 8) in [-1, 1] -> scalar
    ema_update: Callable[[], None]
    sample: Callable[[int, int], torch.Tensor]  # (n, seed) -> (n, 1, 8, 8) in [-1, 1], from the EMA weights
    notes: str


def train_settings() -> tuple[dict, str]:
    """The [train] values this benchmark uses, and where they came from."""
    if not CONFIG_PATH.is_file():
        return dict(FALLBACK_TRAIN), "built-in fallback (no ddpmkit digits.toml)"
    with CONFIG_PATH.open("rb") as f:
        train = tomllib.load(f).get("train", {})
    return {k: train.get(k, v) for k, v in FALLBACK_TRAIN.items()}, str(CONFIG_PATH)


def _digits_preset() -> dict:
    """ddpmkit's `digits` U-Net preset, with the per-level widths and resolutions the peers are built from."""
    return with_geometry(PRESETS["digits"])


def with_geometry(preset: dict) -> dict:
    """A copy of a U-Net config with its per-level "widths" and "resolutions" added."""
    p = dict(preset)
    p["widths"] = tuple(p["ch"] * m for m in p["ch_mult"])
    p["resolutions"] = tuple(p["image_size"] // 2**i for i in range(len(p["ch_mult"])))
    return p


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---- diffusers ---------------------------------------------------------------------------------------------------

def _shared_group_count(widths: tuple[int, ...], largest: int = 32) -> int:
    """The most GroupNorm groups (<= 32) that divide every width and leave >= 2 channels per group.

    ddpmkit picks this per layer; diffusers takes one norm_num_groups for the whole net.
    """
    return max(g for g in range(1, largest + 1) if all(w % g == 0 and w // g >= 2 for w in widths))


def diffusers_unet(p: dict):
    """diffusers' UNet2DModel laid out as a ddpmkit U-Net preset `p` (with "widths" and "resolutions").

    Same levels, widths, res blocks per level, attention resolutions (one head, as the paper's attention) and
    dropout; diffusers takes one GroupNorm group count for the whole net, so the parameter counts differ a little.
    """
    from diffusers import UNet2DModel

    level_attn = [r in p["attn_resolutions"] for r in p["resolutions"]]
    return UNet2DModel(
        sample_size=p["image_size"], in_channels=p["in_channels"], out_channels=p["out_channels"],
        layers_per_block=p["num_res_blocks"], block_out_channels=p["widths"], dropout=p["dropout"],
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in level_attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(level_attn)),
        norm_num_groups=_shared_group_count(p["widths"]),
        attention_head_dim=max(p["widths"]),  # one head, as the paper's attention
    )


def build_diffusers(settings: dict) -> Peer:
    """UNet2DModel + DDPMScheduler as the paper: linear betas, eps prediction, fixed_large variance."""
    from diffusers import DDPMPipeline, DDPMScheduler
    from diffusers.training_utils import EMAModel

    p = _digits_preset()
    unet = diffusers_unet(p)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
                              beta_schedule="linear", prediction_type="epsilon", variance_type="fixed_large",
                              clip_sample=True, clip_sample_range=1.0)
    # decay min(ema_decay, (1 + n) / (10 + n)) as ddpmkit's EMA; min_decay pins it when warm-up is off
    ema = EMAModel(unet.parameters(), decay=settings["ema_decay"], use_ema_warmup=False, foreach=True,
                   min_decay=0.0 if settings["ema_warmup"] else settings["ema_decay"])

    def loss(x0: torch.Tensor) -> torch.Tensor:
        # Algorithm 1 [DDPM]: t uniform, x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, || eps - eps_pred ||^2
        eps = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],))
        return F.mse_loss(unet(scheduler.add_noise(x0, eps, t), t).sample, eps)

    def sample(n: int, seed: int) -> torch.Tensor:
        ema_unet = copy.deepcopy(unet).eval()
        ema.copy_to(ema_unet.parameters())
        pipe = DDPMPipeline(unet=ema_unet, scheduler=copy.deepcopy(scheduler))
        with torch.no_grad():
            images = pipe(batch_size=n, generator=torch.Generator().manual_seed(seed), num_inference_steps=T,
                          output_type="np").images  # (n, 8, 8, 1) in [0, 1]
        return torch.from_numpy(images).permute(0, 3, 1, 2) * 2.0 - 1.0  # (n, 1, 8, 8) in [-1, 1]

    notes = (f"UNet2DModel block_out_channels={p['widths']}, layers_per_block={p['num_res_blocks']}, "
             f"down={unet.config.down_block_types}, norm_num_groups={unet.config.norm_num_groups}, 1 attention "
             f"head; DDPMScheduler linear, epsilon, fixed_large, clip_sample; DDPMPipeline 1000 steps; "
             f"EMA: diffusers EMAModel")
    return Peer("diffusers", unet, _count(unet), loss, lambda: ema.step(unet.parameters()), sample, notes)


# ---- lucidrains' denoising-diffusion-pytorch -----------------------------------------------------------------------

def _import_lucidrains():
    """(Unet, GaussianDiffusion, EMA): imported without torchvision when it is absent.

    The package imports `transforms` and `utils` from torchvision at the top of its main module, for its Trainer
    and Dataset only. When torchvision is not installed, an empty stand-in module answers that one import and is
    removed again, so no other library sees a torchvision.
    """
    if importlib.util.find_spec("denoising_diffusion_pytorch") is None:
        raise UserError("peer lucidrains: denoising-diffusion-pytorch is not installed; pip install --no-deps "
                        "denoising-diffusion-pytorch einops ema-pytorch accelerate, or pass --peers diffusers")
    stand_in = importlib.util.find_spec("torchvision") is None
    names = ("torchvision", "torchvision.transforms", "torchvision.utils")
    if stand_in:
        sys.modules.update({name: types.ModuleType(name) for name in names})
        sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
        sys.modules["torchvision"].utils = sys.modules["torchvision.utils"]
    try:
        from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    except (OSError, RuntimeError) as err:  # torchvision present but built for another torch (e.g. CUDA wheels)
        raise UserError(f"peer lucidrains: importing denoising_diffusion_pytorch failed ({err}); torchvision does "
                        f"not load beside this torch: pip uninstall torchvision, and this script imports the "
                        f"peer without it") from err
    finally:
        for name in names if stand_in else ():
            sys.modules.pop(name, None)
    from ema_pytorch import EMA
    return Unet, GaussianDiffusion, EMA


def build_lucidrains(settings: dict) -> Peer:
    """Unet + GaussianDiffusion: linear schedule, T = 1000, pred_noise, its own ancestral sampler."""
    Unet, GaussianDiffusion, EMA = _import_lucidrains()
    p = _digits_preset()
    # Unet has two ResnetBlocks per level and full attention at the innermost level (4x4 here) by design;
    # dim and dim_mults are ddpmkit's ch and ch_mult, so the levels are 8x8 and 4x4 as in the preset.
    unet = Unet(dim=p["ch"], dim_mults=p["ch_mult"], channels=p["in_channels"], dropout=p["dropout"])
    diffusion = GaussianDiffusion(unet, image_size=p["image_size"], timesteps=T, sampling_timesteps=T,
                                  objective="pred_noise", beta_schedule="linear", auto_normalize=False)
    # ema_pytorch's warm-up is 1 - (1 + n / inv_gamma) ** -power; inv_gamma 10, power 1 gives n / (10 + n),
    # the nearest it has to ddpmkit's (1 + n) / (10 + n). Updated every step from the first, as ddpmkit.
    ema = EMA(diffusion, beta=settings["ema_decay"], update_after_step=0, update_every=1, inv_gamma=10.0,
              power=1.0, min_value=0.0 if settings["ema_warmup"] else settings["ema_decay"])

    def sample(n: int, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # the sampler draws from torch's global generator
        with torch.no_grad():
            return ema.ema_model.eval().sample(batch_size=n)  # (n, 1, 8, 8) in [-1, 1] (auto_normalize off)

    notes = (f"Unet dim={p['ch']}, dim_mults={p['ch_mult']} (2 ResnetBlocks per level, linear attention at 8x8, "
             f"4-head attention at 4x4 and in the middle: its defaults); GaussianDiffusion linear, pred_noise, "
             f"variance beta_tilde (fixed_small, not configurable), clip x0; EMA: ema_pytorch")
    return Peer("lucidrains", diffusion, _count(unet), diffusion, ema.update, sample, notes)


BUILDERS: dict[str, Callable[[dict], Peer]] = {"diffusers": build_diffusers, "lucidrains": build_lucidrains}


# ---- the shared loop -----------------------------------------------------------------------------------------------

def batches(n: int, batch_size: int, seed: int):
    """Index batches: a fresh permutation per epoch, full batches only (the same order for every peer)."""
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


class Run:
    """One peer's training state: Adam, its own batch order and random stream, and its own clocks."""

    def __init__(self, peer: Peer, settings: dict, n: int):
        self.peer, self.settings = peer, settings
        self.params = [p for p in peer.model.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=settings["lr"])
        self.order = batches(n, settings["batch_size"], settings["seed"])
        self.rng = torch.Generator().manual_seed(settings["seed"]).get_state()  # t and eps draws of this peer
        self.step, self.wall, self.cpu, self.losses = 0, 0.0, 0.0, []

    def train_step(self, x0_all: torch.Tensor) -> None:
        """One step of Algorithm 1 [DDPM] with warm-up, clipping and EMA, timed on this peer's clocks."""
        s, outer_rng = self.settings, torch.get_rng_state()
        torch.set_rng_state(self.rng)  # the peers' draws do not depend on which other peers run
        wall, cpu = time.perf_counter(), time.process_time()
        lr = s["lr"] * min(1.0, (self.step + 1) / s["warmup"]) if s["warmup"] else s["lr"]
        self.opt.param_groups[0]["lr"] = lr
        loss = self.peer.loss(x0_all[next(self.order)])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if s["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(self.params, s["grad_clip"])
        self.opt.step()
        self.peer.ema_update()
        self.losses.append(loss.detach())
        self.wall += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        self.step += 1
        self.rng = torch.get_rng_state()
        torch.set_rng_state(outer_rng)

    def summary(self) -> dict:
        images = self.step * self.settings["batch_size"]
        return {"steps": self.step, "train_seconds": self.wall, "train_cpu_seconds": self.cpu,
                "train_images_per_s": images / self.wall, "train_images_per_cpu_s": images / self.cpu,
                "loss_last100": torch.stack(self.losses[-100:]).mean().item()}


def train_round_robin(peers: list[Peer], x0_all: torch.Tensor, settings: dict, seconds: float) -> list[dict]:
    """Train every peer for `seconds` of its own wall clock, alternating one step each.

    On a machine shared with other work the load changes by the minute; taking turns step by step gives every
    peer the same conditions, where training one after the other would hand each a different machine.
    """
    for peer in peers:
        peer.model.train()
    runs = [Run(peer, settings, len(x0_all)) for peer in peers]
    load_start, start = os.getloadavg()[0], time.perf_counter()
    while any(run.wall < seconds for run in runs):
        for run in runs:
            if run.wall < seconds:
                run.train_step(x0_all)
    load = {"load_average_start": load_start, "load_average_end": os.getloadavg()[0],
            "round_robin_wall_seconds": time.perf_counter() - start}
    return [{**run.summary(), **load} for run in runs]


def sample_and_score(peer: Peer, args: argparse.Namespace, seed: int) -> dict:
    """Sample with the peer's own sampler, save the grid and the npz, and score the samples."""
    start = time.perf_counter()
    x = peer.sample(args.n_samples, seed)  # (N, 1, 8, 8) in [-1, 1]
    seconds = time.perf_counter() - start
    samples = from_model_range(x).numpy()  # (N, 8, 8, 1) uint8
    save_grid(samples, args.out / f"{peer.name}_grid.png")
    np.savez(args.out / f"{peer.name}_samples.npz", samples)
    print(f"   {peer.name}: sampled {args.n_samples} images x {T} steps in {seconds:.1f} s; wrote "
          f"{args.out / f'{peer.name}_grid.png'} and {args.out / f'{peer.name}_samples.npz'}", flush=True)
    return {"sample_seconds": seconds, "score": score(samples)}


def run_peers(names: list[str], x0_all: torch.Tensor, settings: dict, args: argparse.Namespace) -> list[dict]:
    """Build every peer, train them side by side for the budget, then sample and score each."""
    peers = []
    for name in names:
        torch.manual_seed(settings["seed"])  # initial weights, whichever peers run
        peers.append(BUILDERS[name](settings))
    for peer in peers:
        print(f"\n== {peer.name}: {peer.net_params:,} network parameters\n   {peer.notes}", flush=True)
    print(f"\ntraining {', '.join(names)} in turns, {args.minutes:g} min of wall clock each ...", flush=True)
    trained = train_round_robin(peers, x0_all, settings, args.minutes * 60)
    for peer, r in zip(peers, trained):
        print(f"   {peer.name}: {r['steps']} steps in {r['train_seconds']:.1f} s ({r['train_cpu_seconds']:.1f} "
              f"CPU s): {r['train_images_per_s']:.1f} images/s, loss (last 100 steps) {r['loss_last100']:.4f}")
    print(f"   load average {trained[0]['load_average_start']:.2f} at the start, "
          f"{trained[0]['load_average_end']:.2f} at the end", flush=True)
    return [{"peer": peer.name, "net_params": peer.net_params, **r, **sample_and_score(peer, args, settings["seed"])}
            for peer, r in zip(peers, trained)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated, from {', '.join(PEERS)}")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock training budget per peer")
    parser.add_argument("--n-samples", type=int, default=256, help="images sampled from each peer")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads; on cores busy with other jobs 1 can be faster than 2")
    parser.add_argument("--split", default="train", choices=("train", "all"),
                        help="digits to train on: 'train' (the first 1500, what `ddpm train` uses) or 'all' (1797)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="folder for grids, npz and json")
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in args.peers if p not in PEERS]
    if unknown or not args.peers:
        raise UserError(f"--peers {','.join(args.peers)}: unknown or empty; choose from {', '.join(PEERS)}")
    if not args.minutes > 0:
        raise UserError(f"--minutes {args.minutes}: must be > 0")
    if args.n_samples < 2:
        raise UserError(f"--n-samples {args.n_samples}: need at least 2 for the Frechet distance")
    if args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be >= 1")
    return args


def _versions(peers: list[str]) -> dict:
    names = ["torch", "ddpmkit"] + [{"diffusers": "diffusers", "lucidrains": "denoising-diffusion-pytorch"}[p]
                                    for p in peers] + (["ema-pytorch"] if "lucidrains" in peers else [])
    return {n: importlib.metadata.version(n) for n in names if importlib.util.find_spec(n.replace("-", "_"))}


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        if "lucidrains" in args.peers:
            _import_lucidrains()  # fail before any training when the peer cannot load
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    settings, source = train_settings()
    versions = _versions(args.peers)
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"threads: {torch.get_num_threads()} of {os.cpu_count()} cores; budget {args.minutes:g} min of training "
          f"per peer; load average {os.getloadavg()[0]:.2f} (the cores may be shared)")
    print(f"training settings from {source}: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(f"ddpmkit UNet.from_preset('digits'): {_count(UNet.from_preset('digits')):,} parameters")
    data = load_dataset("digits", split=args.split)
    x0_all = to_model_range(torch.from_numpy(data.images))  # (N, 1, 8, 8) in [-1, 1]
    print(f"data: digits, split {args.split!r}: {len(data)} images of 8x8")
    args.out.mkdir(parents=True, exist_ok=True)
    save_grid(data.images[np.random.default_rng(0).permutation(len(data.images))[:args.n_samples]],
              args.out / "real_grid.png")
    results = run_peers(args.peers, x0_all, settings, args)
    print("\n" + "\n".join(f"{r['peer']:<11} {r['net_params']:>9,} params  {r['steps']:>6} steps  "
                           f"{r['train_images_per_s']:>7.1f} train images/s ({r['train_images_per_cpu_s']:.1f} per "
                           f"CPU s)  sampling {r['sample_seconds']:.1f} s" for r in results))
    print("\n" + format_table([(f"{r['peer']} ({r['steps']} steps)", r["score"]) for r in results]))
    with (args.out / "peers_results.json").open("w") as f:
        json.dump({"versions": versions, "settings": settings, "settings_source": source, "split": args.split,
                   "train_images": len(data),
                   "minutes": args.minutes, "threads": args.threads, "results": results}, f, indent=1)
    print(f"\nreal digits for comparison: {args.out / 'real_grid.png'}; all numbers: "
          f"{args.out / 'peers_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
