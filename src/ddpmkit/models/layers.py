"""Building blocks of the DDPM U-Net: time embedding, ResBlock, self-attention, down- and upsampling.

References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Appendix B; [PixelCNN++] Salimans et al. 2017;
[WRN] Zagoruyko & Komodakis 2016 (wide ResNet blocks); [GN] Wu & He 2018 (GroupNorm);
[Transformer] Vaswani et al. 2017, Sec. 3.5 (sinusoidal position embedding).

Layer order, initialisation and the downsampling pad follow the authors' TensorFlow code
(diffusion_tf/models/unet.py), so parameter counts match the paper and its released weights can be mapped 1:1:
- GroupNorm eps is 1e-6 (TF's group_norm default), not PyTorch's 1e-5.
- Weights are fan-avg uniform (Xavier/Glorot, gain 1), biases 0; the last conv of each ResBlock, the attention
  output projection and the network's output conv start at 0, so every block starts as the identity.
- The original q, k, v 1x1 "NIN" projections (each C -> C with bias) are fused into one C -> 3C linear layer:
  the same parameters in one matmul, initialised as three separate C -> C layers (fan_avg of C, not of 2C), so
  the weights have the spread of the authors' q, k and v (one fan-avg init of the fused C x 3C matrix would
  give 1/sqrt(2) of it).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

GROUPNORM_EPS = 1e-6


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [sin(t w_i), cos(t w_i)], w_i = max_period^(-i/(dim/2-1)) [DDPM App. B; Transformer 3.5].

    `t` is (B,) of int or float timesteps; the result is (B, dim) float32 whatever the autocast state, computed as
    in the original code (float32 frequencies, sin half first, a zero column appended when `dim` is odd).
    """
    half = dim // 2
    exponent = torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(max_period) / (half - 1))
    angle = t.to(torch.float32)[:, None] * torch.exp(exponent)[None, :]  # (B, half)
    emb = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)  # (B, 2 * half)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def group_count(channels: int, num_groups: int = 32) -> int:
    """Largest divisor of `channels` that is <= num_groups [DDPM App. B: 32] and leaves >= 2 channels per group.

    32 for every width of the paper's models. Narrow nets get fewer groups rather than an error, but never one
    channel per group: that would be instance norm, which subtracts each channel's spatial mean and so erases the
    per-channel time-embedding bias that ResBlock adds just before its second norm (the net would ignore t).
    """
    return max(g for g in range(1, max(1, min(num_groups, channels // 2)) + 1) if channels % g == 0)


def group_norm(channels: int, num_groups: int) -> nn.GroupNorm:
    """GroupNorm over `group_count(channels, num_groups)` groups [GN; DDPM App. B], eps as in the original."""
    return nn.GroupNorm(group_count(channels, num_groups), channels, eps=GROUPNORM_EPS)


def init_fan_avg_(layer: nn.Module, scale: float = 1.0) -> nn.Module:
    """TF variance_scaling(scale, 'fan_avg', 'uniform') weights and zero bias, as the original; scale 0 gives zeros."""
    if scale == 0.0:
        nn.init.zeros_(layer.weight)
    else:
        nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(scale))
    nn.init.zeros_(layer.bias)
    return layer


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, padding: int = 1, scale: float = 1.0) -> nn.Conv2d:
    """3x3 convolution with the original's initialisation."""
    return init_fan_avg_(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=padding), scale)


def linear(in_features: int, out_features: int, scale: float = 1.0) -> nn.Linear:
    """Dense layer (also the original's 1x1 'NIN' layers on token-major tensors) with the original's init."""
    return init_fan_avg_(nn.Linear(in_features, out_features), scale)


class TimeEmbedding(nn.Module):
    """t -> sinusoid of size ch -> Linear(ch, 4ch) -> swish -> Linear(4ch, 4ch) [DDPM App. B]."""

    def __init__(self, ch: int):
        super().__init__()
        self.ch = ch
        self.dense0 = linear(ch, 4 * ch)
        self.dense1 = linear(4 * ch, 4 * ch)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) timesteps -> (B, 4ch) embedding, before the swish that every ResBlock applies to it."""
        emb = timestep_embedding(t, self.ch).to(self.dense0.weight.dtype)  # float32 unless the net was cast
        return self.dense1(F.silu(self.dense0(emb)))


class ResBlock(nn.Module):
    """Wide ResNet block with the time embedding added after conv1 [DDPM App. B; WRN; PixelCNN++].

    out = shortcut(x) + conv2(dropout(swish(norm2(conv1(swish(norm1(x))) + proj(temb))))); the shortcut is a
    1x1 conv ("nin_shortcut") when the channel count changes, else the identity.
    """

    def __init__(self, in_ch: int, out_ch: int, temb_ch: int, dropout: float, num_groups: int):
        super().__init__()
        self.norm1 = group_norm(in_ch, num_groups)
        self.conv1 = conv3x3(in_ch, out_ch)
        self.temb_proj = linear(temb_ch, out_ch)
        self.norm2 = group_norm(out_ch, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_ch, out_ch, scale=0.0)
        self.nin_shortcut = init_fan_avg_(nn.Conv2d(in_ch, out_ch, 1)) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """x (B, in_ch, H, W), temb (B, temb_ch) already passed through swish -> (B, out_ch, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(temb)[:, :, None, None]  # (B, out_ch, 1, 1) broadcast over H, W
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all H*W positions, with a residual [DDPM App. B; PixelCNN++].

    softmax(q k^T / sqrt(C)) v on GroupNorm'd features, via `scaled_dot_product_attention` (fused kernels on
    CPU and GPU). Token-major (B, H*W, C) tensors are views of channels_last activations, so that layout is free.
    """

    def __init__(self, ch: int, num_groups: int):
        super().__init__()
        self.norm = group_norm(ch, num_groups)
        self.qkv = nn.Linear(ch, 3 * ch)  # the original's q, k, v NIN layers, fused
        for part in self.qkv.weight.data.chunk(3, dim=0):  # q, k, v: each its own C -> C fan-avg init
            nn.init.xavier_uniform_(part)
        nn.init.zeros_(self.qkv.bias)
        self.proj_out = linear(ch, ch, scale=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        B, C, H, W = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        q, k, v = self.qkv(tokens).unsqueeze(1).chunk(3, dim=-1)  # each (B, 1, H*W, C): one head
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1)  # (B, H*W, C)
        h = self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)  # a channels_last view, no copy
        return x + h


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv [DDPM App. B], padding right/bottom only like TF's 'SAME'."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv3x3(ch, ch, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H/2, W/2) for even H, W."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W by nearest-neighbour repetition, then a 3x3 conv [DDPM App. B]."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = conv3x3(ch, ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, 2H, 2W)."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
