"""One peer trained with its own defaults for a wall-clock budget, then sampled with DDIM 50: bench/budget.py's peers.

    python bench/peers_budget.py --peer lucidrains --data fashion-mnist --minutes 15 --n 400 --out DIR

Writes DIR/ddim50_seed0.npz (uint8 (N, H, W, 1), key arr_0), DIR/grid.png and DIR/result.json (steps, seconds,
parameters). See bench/budget.py's docstring for each peer's settings and where they come from. One thread.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_peers import _import_lucidrains  # noqa: E402  (the torchvision stand-in lives there)

from ddpmkit.data import from_model_range, load_dataset, to_model_range  # noqa: E402
from ddpmkit.figures.grid import save_grid  # noqa: E402

PEER_NAMES = ("lucidrains", "diffusers")
# Each peer's default network halves the image size at every level, so the size must divide by 2^levels-1:
# lucidrains' dim_mults (1, 2, 4, 8) by 8, diffusers' six blocks by 32. Images are padded up to the next such size
# with background (-1) and the samples cropped back: 28x28 -> 32x32 for both; 8x8 digits stay 8x8 for lucidrains
# and become 32x32 for diffusers (its default network cannot take less).
DIVISOR = {"lucidrains": 8, "diffusers": 32}
SIZE = 32  # set by main() for the peer and the data


def padded(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 1) -> (N, 1, SIZE, SIZE) in [-1, 1], the border at -1 (the background)."""
    x = to_model_range(torch.from_numpy(images))
    pad = (SIZE - x.shape[-1]) // 2
    return F.pad(x, (pad, SIZE - x.shape[-1] - pad) * 2, value=-1.0)


def cropped(x: torch.Tensor, size: int) -> torch.Tensor:
    pad = (SIZE - size) // 2
    return x[..., pad:pad + size, pad:pad + size]


def lucidrains(x_all: torch.Tensor, seconds: float, out: Path):
    """Unet(dim=64) with its default dim_mults, GaussianDiffusion defaults (pred_v, sigmoid, T = 1000) and its
    Trainer's defaults: batch 16, Adam 1e-4 betas (0.9, 0.99), clip 1, hflip, EMA 0.995 every 10 steps."""
    Unet, GaussianDiffusion, EMA = _import_lucidrains()
    unet = Unet(dim=64, channels=1)
    diffusion = GaussianDiffusion(unet, image_size=SIZE, timesteps=1000, sampling_timesteps=50)  # DDIM 50, eta 0
    ema = EMA(diffusion, beta=0.995, update_every=10)
    if seconds <= 0:  # --sample-only
        ema.ema_model.load_state_dict(torch.load(out / "ema.pt"))
        return ema.ema_model.eval(), None
    opt = torch.optim.Adam(diffusion.parameters(), lr=1e-4, betas=(0.9, 0.99))
    gen, steps, start = torch.Generator().manual_seed(0), 0, time.monotonic()
    while time.monotonic() - start < seconds:
        idx = torch.randint(0, len(x_all), (16,), generator=gen)
        x = x_all[idx]
        x = torch.where(torch.rand(16, 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
        loss = diffusion((x + 1) / 2)  # it normalises [0, 1] to [-1, 1] itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema.update()
        steps += 1
    train_s = time.monotonic() - start
    torch.save(ema.ema_model.state_dict(), out / "ema.pt")
    return ema.ema_model.eval(), {"steps": steps, "train_s": train_s, "params": sum(p.numel() for p in unet.parameters())}


def lucidrains_sample(model, b: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.sample(batch_size=b) * 2 - 1  # its DDIM (sampling_timesteps 50, eta 0), [0, 1] -> [-1, 1]


def diffusers_recipe(x_all: torch.Tensor, seconds: float, out: Path):
    """train_unconditional.py's defaults: its UNet2DModel, DDPMScheduler(1000, linear), batch 16, AdamW 1e-4
    betas (0.95, 0.999) wd 1e-6 eps 1e-8, cosine schedule with 500 warm-up steps over 100 epochs, clip 1,
    EMAModel(max 0.9999, inv_gamma 1, power 3/4, with its warm-up)."""
    from diffusers import DDIMPipeline, DDIMScheduler, DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    unet = UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(128, 128, 256, 256, 512, 512),
                       down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D",
                                         "DownBlock2D"),
                       up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                                       "UpBlock2D"))
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    total = 100 * math.ceil(len(x_all) / 16)
    lr_sched = get_scheduler("cosine", optimizer=opt, num_warmup_steps=500, num_training_steps=total)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=0.75)
    pipe = lambda: DDIMPipeline(unet=unet.eval(), scheduler=DDIMScheduler.from_config(sched.config))  # noqa: E731
    if seconds <= 0:  # --sample-only
        unet.load_state_dict(torch.load(out / "ema.pt"))
        return pipe(), None
    gen, steps, start = torch.Generator().manual_seed(0), 0, time.monotonic()
    perm = torch.randperm(len(x_all), generator=gen)
    while time.monotonic() - start < seconds:
        x0 = x_all[perm[(steps * 16) % (len(x_all) - 16):][:16]]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (16,), generator=gen)
        loss = F.mse_loss(unet(sched.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        steps += 1
    train_s = time.monotonic() - start
    ema.copy_to(unet.parameters())
    torch.save(unet.state_dict(), out / "ema.pt")
    return pipe(), {"steps": steps, "train_s": train_s, "params": sum(p.numel() for p in unet.parameters())}


def diffusers_sample(pipe, b: int, seed: int) -> torch.Tensor:
    images = pipe(batch_size=b, generator=torch.Generator().manual_seed(seed), num_inference_steps=50, eta=0.0,
                  output_type="np").images  # (b, 32, 32, 1) in [0, 1]
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


PEERS = {"lucidrains": (lucidrains, lucidrains_sample), "diffusers": (diffusers_recipe, diffusers_sample)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--peer", required=True, choices=PEER_NAMES)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sample-only", action="store_true", help="sample again from DIR/ema.pt")
    p.add_argument("--chunk", type=int, default=100, help="images per sampling batch (each saved as it ends)")
    p.add_argument("--sample-minutes", type=float, default=math.inf,
                   help="stop sampling after the batch of 100 that passes this; the part is kept (a shared CPU)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    data = load_dataset(args.data, split="train")
    global SIZE
    SIZE = math.ceil(data.image_size / DIVISOR[args.peer]) * DIVISOR[args.peer]
    args.out.mkdir(parents=True, exist_ok=True)
    train, draw = PEERS[args.peer]
    model, result = train(padded(data.images), 0.0 if args.sample_only else args.minutes * 60.0, args.out)
    if result is not None:
        result["peer"], result["trained_size"] = args.peer, SIZE
        (args.out / "result.json").write_text(json.dumps(result))
        print(json.dumps(result), flush=True)
    chunks, start = [], time.monotonic()
    for i in range(0, args.n, args.chunk):  # saved after each chunk, so a slow machine leaves a usable part
        x = draw(model, min(args.chunk, args.n - i), i)
        chunks.append(from_model_range(cropped(x.clamp(-1, 1), data.image_size)).numpy())
        samples = np.concatenate(chunks)
        name = "ddim50_seed0.npz" if len(samples) == args.n else "ddim50_seed0_partial.npz"
        np.savez(args.out / name, samples)
        print(f"sampled {len(samples)} in {time.monotonic() - start:.0f} s", flush=True)
        if time.monotonic() - start > 60 * args.sample_minutes:
            break
    save_grid(samples[:64], args.out / "grid.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
