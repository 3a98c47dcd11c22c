"""The one place where pixels meet the model's range.

Data stay uint8 everywhere in `ddpmkit.data`; the network sees x0 in [-1, 1] [DDPM Sec. 3.3: "image data consists
of integers in {0, 1, ..., 255} scaled linearly to [-1, 1]"]. `from_model_range` is the exact inverse on the 256
levels, so a round trip of uint8 data is lossless.

References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239).
"""

from __future__ import annotations

import torch


def to_model_range(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, C) in {0..255} -> float32 (B, C, H, W) in [-1, 1] [DDPM Sec. 3.3]."""
    if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
        raise TypeError(f"to_model_range needs a uint8 (B, H, W, C) tensor, got {x_uint8.dtype} "
                        f"{tuple(x_uint8.shape)}")
    x = x_uint8.permute(0, 3, 1, 2).to(torch.float32)  # (B, C, H, W)
    return (x / 127.5 - 1.0).contiguous()


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """float (B, C, H, W) in [-1, 1] -> uint8 (B, H, W, C), clipped and rounded to the nearest level.

    NaN becomes 0 (mid-grey) so a diverged sample still saves and shows up as a flat grey patch.
    """
    if x.ndim != 4:
        raise TypeError(f"from_model_range needs a (B, C, H, W) tensor, got {tuple(x.shape)}")
    x = torch.nan_to_num(x.to(torch.float32), nan=0.0).clamp(-1.0, 1.0)
    pixels = ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous()  # (B, H, W, C)
