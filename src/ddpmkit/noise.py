"""Noise per image: image i's every draw depends only on (seed, i), never on its batch, rank or resumption.

A long job (50,000 samples, the test-set bound) is split into batches over processes and may be killed and resumed.
For the same command to give the same images however it is split, each image has a noise stream of its own:

    image_seed(seed, i) = the first 8 bytes (little-endian) of BLAKE2b("ddpmkit-image-noise/v1/{seed}/{i}")

seeds a CPU `torch.Generator` (Mersenne Twister) for image i. `ImageNoise(seed, indices)` holds the generators of
a batch's images; a sampler or the bound draws its noise through `randn(shape, generator)`, which, given an
ImageNoise, fills row k of the batch from image indices[k]'s generator. Every image of a batch takes the same steps,
so image i draws the same sequence of (C, H, W) blocks wherever it runs: x_T first, then one block per noisy step
(ancestral, ddim with eta > 0, dpm++2m-sde) or per term of the bound.

The draws are made on the CPU and then moved to the model's device, so the noise of image i is also the same on a
CPU and a GPU (the network's arithmetic may still differ in the last bits between devices). The cost against one
batched draw is one small randn call per image per draw: see docs/PERFORMANCE.md (bench/eval_scale.py).
A plain `torch.Generator` (or None) passes through `randn` unchanged: one batched draw, as before.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch

RULE = "ddpmkit-image-noise/v1"  # part of every job key: a change of the rule must never mix old and new shards


def image_seed(seed: int, index: int) -> int:
    """The 64-bit seed of image `index`'s noise stream in a job seeded with `seed` (see the module)."""
    digest = hashlib.blake2b(f"{RULE}/{int(seed)}/{int(index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class ImageNoise:
    """The noise streams of one batch of images, by their indices in the job (row k is image indices[k])."""

    def __init__(self, seed: int, indices: Sequence[int]):
        self.seed = int(seed)
        self.indices = [int(i) for i in indices]
        self.generators = [torch.Generator("cpu").manual_seed(image_seed(seed, i)) for i in self.indices]

    def __len__(self) -> int:
        return len(self.generators)

    def randn(self, shape, *, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Standard normal (B, ...) with row k from image k's stream; drawn on the CPU, returned on `device`."""
        shape = tuple(shape)
        if not shape or shape[0] != len(self.generators):
            raise ValueError(f"ImageNoise holds {len(self.generators)} images, asked for noise of shape {shape}")
        out = torch.empty(shape, dtype=dtype)
        for row, g in zip(out, self.generators):
            torch.randn(shape[1:], generator=g, dtype=dtype, out=row)
        return out.to(device) if device is not None else out


def randn(shape, generator, *, device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, I) of `shape` on `device`: per image from an ImageNoise, else one draw on the generator's device."""
    if isinstance(generator, ImageNoise):
        return generator.randn(shape, dtype=dtype, device=device)
    where = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=where, dtype=dtype).to(device)


__all__ = ["ImageNoise", "RULE", "image_seed", "randn"]
