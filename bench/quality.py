"""Quality at an equal CPU budget: ddpmkit's U-Net against diffusers' UNet2DModel + DDPMScheduler on Fashion-MNIST.

    apt-get install -y dataset-fashion-mnist            # the IDX files under /usr/share/datasets/fashion-mnist
    python bench/quality.py --minutes 15 --threads 2    # about 1 h on two cores: training, sampling, evaluation
    python bench/quality.py --minutes 0.2 --n-samples 32 --nll-n 4 --sample-steps 10 --classifier-steps 50  # smoke

Both networks are built from one U-Net layout (ddpmkit's `mnist28` preset made smaller so that a CPU budget buys
useful training: ch 32, one res block per level, attention at 7x7; every value is a flag) and get the same
process [DDPM Sec. 4]: T = 1000, linear betas 1e-4 .. 0.02, epsilon prediction, L_simple [DDPM Eq. 14].
They train in turns, one step each, each on its own clock, until each has used --minutes of wall clock: the same
initial seed, data order, batch size, Adam settings, warm-up, gradient clipping and EMA decay.
  ddpmkit    UNet + Diffusion.training_loss, ddpmkit's EMA.
  diffusers  UNet2DModel + DDPMScheduler.add_noise, diffusers' EMAModel.
Then the EMA weights of both are measured the same way, which is what `ddpm eval` does:
  samples    the same sampler for both (ddpmkit's ancestral sampler, respaced to --sample-steps, sigma^2 = beta,
             x0 clipped), the same seed;
  nll        bits/dim of the whole bound L_T + sum L_{t-1} + L_0, all 1000 terms, on --nll-n test images
             (ddpmkit.evaluate.nll.bits_per_dim, as `ddpm eval --metrics nll`);
  fid, pr    `ddpm eval --samples FILE --data fashion-mnist --split test --metrics fid,pr --features CLASSIFIER`,
             in the feature space of a small classifier trained on the Fashion-MNIST training split (trained once
             and cached in --out; `ddpm train-classifier`). These numbers are comparable only with each other.
Writes <out>/<name>_samples.npz and _grid.png, fashion_classifier.safetensors and quality.json. Every figure printed is
measured in this run.

References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Algorithms 1-2, Sec. 4, App. B.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ddpmkit import Diffusion
from ddpmkit.data import from_model_range, load_dataset, to_model_range
from ddpmkit.errors import UserError
from ddpmkit.evaluate.classifier import train_classifier
from ddpmkit.evaluate.nll import bits_per_dim
from ddpmkit.evaluate.run import EvalRequest, evaluate
from ddpmkit.figures.grid import save_grid
from ddpmkit.models import PRESETS, UNet
from ddpmkit.train.ema import EMA

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_peers import (  # noqa: E402
    BETA_END,
    BETA_START,
    Peer,
    T,
    _count,
    _versions,
    diffusers_unet,
    train_round_robin,
    with_geometry,
)

DATA = "fashion-mnist"


class EpsFromDiffusers(nn.Module):
    """UNet2DModel as a plain (x_t, t) -> eps network, so ddpmkit's sampler and bound can run it."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(xt, t).sample


def layout(args: argparse.Namespace) -> dict:
    """The shared U-Net layout: the mnist28 preset with the flags' sizes."""
    return with_geometry(dict(PRESETS["mnist28"], ch=args.ch, ch_mult=tuple(args.ch_mult),
                              num_res_blocks=args.num_res_blocks, attn_resolutions=tuple(args.attn),
                              dropout=args.dropout))


def build_ours(p: dict, settings: dict, diffusion: Diffusion) -> tuple[Peer, nn.Module]:
    net = UNet(**{k: v for k, v in p.items() if k not in ("widths", "resolutions")})
    ema = EMA(net, decay=settings["ema_decay"], warmup=True)
    updates = [0]

    def ema_update() -> None:
        ema.update(net, updates[0])
        updates[0] += 1

    def loss(x0: torch.Tensor) -> torch.Tensor:
        return diffusion.training_loss(net, x0).mean()  # Algorithm 1 [DDPM], L_simple

    notes = f"ddpmkit UNet {p['widths']}, {p['num_res_blocks']} res blocks/level, attention at {p['attn_resolutions']}"
    return Peer("ddpmkit", net, _count(net), loss, ema_update, None, notes), ema.model


def build_diffusers(p: dict, settings: dict) -> tuple[Peer, nn.Module]:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import EMAModel

    unet = diffusers_unet(p)
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_start=BETA_START, beta_end=BETA_END,
                              beta_schedule="linear", prediction_type="epsilon", variance_type="fixed_large")
    ema = EMAModel(unet.parameters(), decay=settings["ema_decay"], use_ema_warmup=False, foreach=True, min_decay=0.0)
    # min_decay 0 with diffusers' default warm-up (1 + n) / (10 + n): the same decay per step as ddpmkit's EMA

    def loss(x0: torch.Tensor) -> torch.Tensor:
        eps = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],))
        return F.mse_loss(unet(scheduler.add_noise(x0, eps, t), t).sample, eps)

    def ema_model() -> nn.Module:
        import copy

        copy_ = copy.deepcopy(unet).eval()
        ema.copy_to(copy_.parameters())
        return EpsFromDiffusers(copy_)

    notes = (f"diffusers UNet2DModel block_out_channels={p['widths']}, layers_per_block={p['num_res_blocks']}, "
             f"down={unet.config.down_block_types}, norm_num_groups={unet.config.norm_num_groups}")
    return Peer("diffusers", unet, _count(unet), loss, lambda: ema.step(unet.parameters()), None, notes), ema_model


@torch.no_grad()
def draw(diffusion: Diffusion, model: nn.Module, n: int, steps: int, seed: int, shape: tuple) -> np.ndarray:
    """n samples (N, H, W, C) uint8 with ddpmkit's respaced ancestral sampler, in batches of 250."""
    gen, out = torch.Generator().manual_seed(seed), []
    for start in tqdm(range(0, n, 250), desc="sample batches"):
        b = min(250, n - start)
        out.append(from_model_range(diffusion.sample(model.eval(), (b, *shape), steps=steps, generator=gen)).numpy())
    return np.concatenate(out)


def measure(name: str, model: nn.Module, diffusion: Diffusion, test_images: np.ndarray, classifier: Path,
            args: argparse.Namespace) -> dict:
    """Samples, bits/dim and feature-space FID / precision / recall of one trained EMA network."""
    start = time.perf_counter()
    samples = draw(diffusion, model, args.n_samples, args.sample_steps, args.seed, (1, 28, 28))
    sample_seconds = time.perf_counter() - start
    path = args.out / f"{name}_samples.npz"
    np.savez(path, samples)
    save_grid(samples[:64], args.out / f"{name}_grid.png")
    ev = evaluate(EvalRequest(data=DATA, samples=path, split="test", metrics=("fid", "pr"), features=classifier,
                              n=args.n_samples, progress=False))
    start = time.perf_counter()
    nll = bits_per_dim(diffusion, model.eval(), test_images[:args.nll_n], batch_size=args.nll_n, progress=True)
    return {"sample_seconds": sample_seconds, "nll_seconds": time.perf_counter() - start,
            "nll_bpd": nll["nll_bpd"], "nll_bpd_sem": nll["nll_bpd_sem"], "fid": ev["fid"],
            "precision": ev["precision"], "recall": ev["recall"], "feature_extractor": ev["feature_extractor"]}


def classifier_file(args: argparse.Namespace, train) -> tuple[Path, dict | None]:
    path = args.out / "fashion_classifier.safetensors"
    if path.is_file():
        return path, None
    print(f"training the feature classifier on {DATA} (cached as {path}) ...", flush=True)
    return path, train_classifier(train, path, steps=args.classifier_steps, progress=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ints = lambda s: [int(v) for v in s.split(",") if v.strip()]  # noqa: E731
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock training budget per network")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (a short run: above the paper's)")
    parser.add_argument("--warmup", type=int, default=100, help="linear learning-rate warm-up steps")
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--ch", type=int, default=32)
    parser.add_argument("--ch-mult", type=ints, default=[1, 2, 2])
    parser.add_argument("--num-res-blocks", type=int, default=1)
    parser.add_argument("--attn", type=ints, default=[7], help="attention resolutions, e.g. 7 or 14,7")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--sample-steps", type=int, default=100, help="respaced ancestral steps (1000: Algorithm 2)")
    parser.add_argument("--n-samples", type=int, default=500)
    parser.add_argument("--nll-n", type=int, default=50, help="test images for bits/dim (1000 network calls each)")
    parser.add_argument("--classifier-steps", type=int, default=None, help="default: ddpm train-classifier's")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/out/quality"))
    args = parser.parse_args(argv)
    if not args.minutes > 0 or args.n_samples < 2 or args.nll_n < 1 or not 1 <= args.sample_steps <= T:
        raise UserError("--minutes must be > 0, --n-samples >= 2, --nll-n >= 1, --sample-steps in [1, 1000]")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        train = load_dataset(DATA, split="train")
        test = load_dataset(DATA, split="test")
    except UserError as err:  # a bad option, or the loader's one line when the Debian package is missing
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    versions = _versions(["diffusers"])
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {args.threads} threads; "
          f"load average {os.getloadavg()[0]:.2f}")
    classifier, clf_report = classifier_file(args, train)
    if clf_report:
        print(f"classifier: held-out accuracy {clf_report['heldout_accuracy']:.3f} after {clf_report['steps']} steps")
    settings = dict(batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, grad_clip=1.0,
                    ema_decay=args.ema_decay, ema_warmup=True, seed=args.seed)
    diffusion = Diffusion.from_name("linear", T, beta_start=BETA_START, beta_end=BETA_END,
                                    parameterization="eps", variance="fixed_large")
    p = layout(args)
    torch.manual_seed(args.seed)
    ours, ours_ema = build_ours(p, settings, diffusion)
    torch.manual_seed(args.seed)
    theirs, theirs_ema = build_diffusers(p, settings)
    for peer in (ours, theirs):
        print(f"{peer.name}: {peer.net_params:,} parameters; {peer.notes}")
    x0_all = to_model_range(torch.from_numpy(train.images))  # (60000, 1, 28, 28) in [-1, 1]
    print(f"training both on {len(train)} images, {args.minutes:g} min of wall clock each, in turns ...", flush=True)
    trained = train_round_robin([ours, theirs], x0_all, settings, args.minutes * 60)
    results = []
    for peer, model, r in zip((ours, theirs), (ours_ema, theirs_ema()), trained):
        print(f"{peer.name}: {r['steps']} steps, {r['train_images_per_s']:.1f} images/s, loss (last 100) "
              f"{r['loss_last100']:.4f}; measuring ...", flush=True)
        results.append({"name": peer.name, "params": peer.net_params, **r,
                        **measure(peer.name, model, diffusion, test.images, classifier, args)})
    header = f"{'':<10} {'params':>9} {'steps':>6} {'img/s':>6} {'loss':>7} {'bits/dim':>14} {'FID':>7} " \
             f"{'precision':>9} {'recall':>6}"
    print("\n" + header)
    for r in results:
        print(f"{r['name']:<10} {r['params']:>9,} {r['steps']:>6} {r['train_images_per_s']:>6.1f} "
              f"{r['loss_last100']:>7.4f} {r['nll_bpd']:>7.3f} ± {r['nll_bpd_sem']:.3f} {r['fid']:>7.2f} "
              f"{r['precision']:>9.3f} {r['recall']:>6.3f}")
    print(f"FID, precision, recall: {results[0]['feature_extractor']} features (comparable only with each other); "
          f"{args.n_samples} samples with {args.sample_steps} respaced steps; bits/dim on {args.nll_n} test images")
    with (args.out / "quality.json").open("w") as f:
        json.dump({"versions": versions, "args": {k: str(v) for k, v in vars(args).items()},
                   "classifier": clf_report, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
