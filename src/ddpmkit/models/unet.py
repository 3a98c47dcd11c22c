"""The DDPM U-Net: x_t, t -> a tensor shaped like x_t (usually eps) [DDPM App. B].

References: [DDPM] Ho, Jain & Abbeel 2020 (arXiv 2006.11239), Appendix B; [PixelCNN++] Salimans et al. 2017.

The backbone is the authors' TensorFlow model (diffusion_tf/models/unet.py), layer for layer:
    conv_in -> for each level: num_res_blocks x (ResBlock [+ Attn]), then a stride-2 downsample (not the last)
    -> middle: ResBlock, Attn, ResBlock
    -> for each level, deepest first: (num_res_blocks + 1) x (concat skip, ResBlock [+ Attn]), then upsample
    -> GroupNorm, swish, conv_out.
Every output of conv_in, of each down ResBlock (after its attention) and of each downsample is kept as a skip,
and each up ResBlock consumes exactly one. Attention sits at the levels whose resolution, for an input of
`image_size`, is in `attn_resolutions`; the net stays convolutional, so other sizes divisible by
2**(len(ch_mult) - 1) work too (non-square included), with attention at the same levels.

The network knows nothing about the noise schedule: t is only an input to the sinusoidal embedding.
"""

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ddpmkit.errors import ConfigError
from ddpmkit.models.layers import AttnBlock, Downsample, ResBlock, TimeEmbedding, Upsample, conv3x3, group_norm

NO_CLASS = -1  # the label of the learned "no class" token: the unconditional model of a conditional net

# Presets: constructor keywords. The key names are exactly UNet's arguments.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's CIFAR-10 model [DDPM App. B]: 35,746,307 parameters, as the original implementation.
    "cifar10": dict(in_channels=3, out_channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attn_resolutions=(16,), dropout=0.1, image_size=32),
    # The paper's 256x256 model for CelebA-HQ and LSUN [DDPM App. B: "114 million parameters"; the authors' code
    # calls it unet2d16b2c112244]: six levels 256 .. 8, attention at 16x16, no dropout (0 for all but CIFAR-10).
    # 113,673,219 parameters; the two names are one network, as in the paper.
    "celebahq256": dict(in_channels=3, out_channels=3, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                        attn_resolutions=(16,), dropout=0.0, image_size=256),
    # 8x8 grey digits (sklearn's 1,797 images): two levels (8, 4) are all an 8x8 image has room for; attention
    # at 4x4 is 16 tokens, nearly free. ch=32 keeps a training step at batch 128 well under a second on two CPU
    # cores, so a usable model trains in minutes; no dropout, since a few minutes of training cannot overfit.
    "digits": dict(in_channels=1, out_channels=1, ch=32, ch_mult=(1, 2), num_res_blocks=2,
                   attn_resolutions=(4,), dropout=0.0, image_size=8),
    # 28x28 grey (MNIST, Fashion-MNIST): 28 = 4 * 7 allows only three levels (28, 14, 7). Attention at 14, half
    # the input size, as the paper's 16 for 32x32 inputs; dropout 0.1 as the paper's CIFAR-10 model.
    "mnist28": dict(in_channels=1, out_channels=1, ch=64, ch_mult=(1, 2, 2), num_res_blocks=2,
                    attn_resolutions=(14,), dropout=0.1, image_size=28),
    # For tests and smoke runs: every block type (ResBlock with and without shortcut, attention, both
    # resamplers) in milliseconds, on 8x8 grey inputs.
    "tiny": dict(in_channels=1, out_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                 attn_resolutions=(4,), dropout=0.0, image_size=8),
}
PRESETS["fashion_mnist"] = PRESETS["mnist28"]
PRESETS["lsun256"] = PRESETS["celebahq256"]


def _check_config(cfg: dict[str, Any]) -> None:
    """Raise ConfigError naming the first impossible constructor value and what is allowed."""
    for key in ("in_channels", "out_channels", "num_res_blocks", "image_size", "num_groups"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"UNet {key}={cfg[key]!r}: must be a positive integer")
    if not isinstance(cfg["ch"], int) or cfg["ch"] < 4:
        raise ConfigError(f"UNet ch={cfg['ch']!r}: must be an integer >= 4 (the time embedding has ch entries)")
    if not cfg["ch_mult"] or not all(isinstance(m, int) and m >= 1 for m in cfg["ch_mult"]):
        raise ConfigError(f"UNet ch_mult={cfg['ch_mult']!r}: must be a non-empty tuple of positive integers")
    classes = cfg.get("num_classes")
    if classes is not None and (not isinstance(classes, int) or isinstance(classes, bool) or classes < 1):
        raise ConfigError(f"UNet num_classes={classes!r}: must be a positive integer, or None (unconditional)")
    if not 0.0 <= cfg["dropout"] < 1.0:
        raise ConfigError(f"UNet dropout={cfg['dropout']!r}: must be in [0, 1)")
    factor = 2 ** (len(cfg["ch_mult"]) - 1)
    if cfg["image_size"] % factor:
        raise ConfigError(f"UNet image_size={cfg['image_size']} with {len(cfg['ch_mult'])} levels: image_size must "
                          f"be a multiple of {factor}; use a shorter ch_mult or another image_size")
    resolutions = [cfg["image_size"] // 2**i for i in range(len(cfg["ch_mult"]))]
    bad = [r for r in cfg["attn_resolutions"] if r not in resolutions]
    if bad:
        raise ConfigError(f"UNet attn_resolutions={tuple(cfg['attn_resolutions'])}: {bad} is not a level "
                          f"resolution; allowed: {resolutions} (image_size={cfg['image_size']} halved per level)")


class MidBlock(nn.Module):
    """The middle of the U-Net: ResBlock, self-attention, ResBlock [DDPM App. B]."""

    def __init__(self, ch: int, temb_ch: int, dropout: float, num_groups: int):
        super().__init__()
        self.block_1 = ResBlock(ch, ch, temb_ch, dropout, num_groups)
        self.attn_1 = AttnBlock(ch, num_groups)
        self.block_2 = ResBlock(ch, ch, temb_ch, dropout, num_groups)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C, h, w)."""
        return self.block_2(self.attn_1(self.block_1(h, temb)), temb)


def _level(blocks: list[nn.Module], attns: list[nn.Module], resample: nn.Module | None, name: str) -> nn.Module:
    """One resolution level: `block` and (possibly empty) `attn` lists, and `downsample` or `upsample` (or None)."""
    level = nn.Module()
    level.block = nn.ModuleList(blocks)
    level.attn = nn.ModuleList(attns)
    setattr(level, name, resample)
    return level


class UNet(nn.Module):
    """The DDPM network eps_theta(x_t, t) [DDPM App. B, Eq. 12]: (B, C, H, W), (B,) -> (B, out_channels, H, W).

    Level i has ch * ch_mult[i] channels at resolution image_size / 2**i. GroupNorm uses the largest divisor of
    each layer's channel count that is <= num_groups and leaves >= 2 channels per group (`layers.group_count`):
    32, as the paper, for widths >= 64 divisible by 32; fewer for narrow test nets instead of an error. The
    `cifar10` preset is the paper's 35.7M model: exactly 35,746,307 parameters, as the original code.
    `self.config` holds the constructor arguments; `UNet(**net.config)` rebuilds the same architecture.
    With `num_classes` = K the net is class-conditional: an embedding of K + 1 rows (the last is the learned
    "no class" token, label NO_CLASS = -1) is added to the time embedding, and forward takes labels y.
    """

    def __init__(self, *, in_channels: int = 3, out_channels: int = 3, ch: int = 128,
                 ch_mult: tuple[int, ...] = (1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions: tuple[int, ...] = (16,), dropout: float = 0.1, image_size: int = 32,
                 num_groups: int = 32, num_classes: int | None = None):
        super().__init__()
        self.config = dict(in_channels=in_channels, out_channels=out_channels, ch=ch, ch_mult=tuple(ch_mult),
                           num_res_blocks=num_res_blocks, attn_resolutions=tuple(attn_resolutions),
                           dropout=float(dropout), image_size=image_size, num_groups=num_groups)
        if num_classes is not None:  # kept out of config for unconditional nets, so their config is unchanged
            self.config["num_classes"] = num_classes
        _check_config(self.config)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.downsample_factor = 2 ** (len(ch_mult) - 1)
        self.temb = TimeEmbedding(ch)
        self.num_classes = num_classes
        # one row per class and a last, learned row for "no class" (label NO_CLASS = -1) [CFG Sec. 3.2]
        self.class_emb = nn.Embedding(num_classes + 1, 4 * ch) if num_classes else None
        self.conv_in = conv3x3(in_channels, ch)
        self.down, skip_chs = self._build_down()
        self.mid = MidBlock(ch * ch_mult[-1], 4 * ch, dropout, num_groups)
        self.up = self._build_up(skip_chs)
        self.norm_out = group_norm(ch, num_groups)
        self.conv_out = conv3x3(ch, out_channels, scale=0.0)

    def _build_down(self) -> tuple[nn.ModuleList, list[int]]:
        """Down path levels, and the channel count of every skip they store (conv_in's first)."""
        c = self.config
        block_ch, skip_chs, levels = c["ch"], [c["ch"]], []
        for i, mult in enumerate(c["ch_mult"]):
            use_attn = c["image_size"] // 2**i in c["attn_resolutions"]
            blocks, attns = [], []
            for _ in range(c["num_res_blocks"]):
                blocks.append(ResBlock(block_ch, c["ch"] * mult, 4 * c["ch"], c["dropout"], c["num_groups"]))
                block_ch = c["ch"] * mult
                attns += [AttnBlock(block_ch, c["num_groups"])] if use_attn else []
                skip_chs.append(block_ch)
            down = Downsample(block_ch) if i < len(c["ch_mult"]) - 1 else None
            skip_chs += [block_ch] if down is not None else []
            levels.append(_level(blocks, attns, down, "downsample"))
        return nn.ModuleList(levels), skip_chs

    def _build_up(self, skip_chs: list[int]) -> nn.ModuleList:
        """Up path levels, indexed by resolution level like `down` (run deepest first)."""
        c = self.config
        block_ch, skip_chs, levels = c["ch"] * c["ch_mult"][-1], list(skip_chs), []
        for i in reversed(range(len(c["ch_mult"]))):
            use_attn = c["image_size"] // 2**i in c["attn_resolutions"]
            blocks, attns = [], []
            for _ in range(c["num_res_blocks"] + 1):
                in_ch = block_ch + skip_chs.pop()
                block_ch = c["ch"] * c["ch_mult"][i]
                blocks.append(ResBlock(in_ch, block_ch, 4 * c["ch"], c["dropout"], c["num_groups"]))
                attns += [AttnBlock(block_ch, c["num_groups"])] if use_attn else []
            up = Upsample(block_ch) if i > 0 else None
            levels.insert(0, _level(blocks, attns, up, "upsample"))
        assert not skip_chs, "every stored skip must be consumed"
        return nn.ModuleList(levels)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "UNet":
        """Build a preset from PRESETS (cifar10 is the paper's), with constructor keywords overridden."""
        if name not in PRESETS:
            raise ConfigError(f"unknown UNet preset {name!r}; known presets: {', '.join(sorted(PRESETS))}")
        allowed = list(cls.__init__.__kwdefaults__)
        unknown = sorted(set(overrides) - set(allowed))
        if unknown:
            raise ConfigError(f"unknown UNet option(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        return cls(**{**PRESETS[name], **overrides})

    def _check_input(self, x: torch.Tensor) -> None:
        """Raise ConfigError when x is not (B, in_channels, H, W) with H, W multiples of the downsample factor."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(f"UNet input of shape {tuple(x.shape)}: expected (B, {self.in_channels}, H, W); "
                              f"pass {self.in_channels}-channel images or build the net with that in_channels")
        H, W, f = x.shape[2], x.shape[3], self.downsample_factor
        if H % f or W % f:
            raise ConfigError(f"UNet input of size {H}x{W}: H and W must be multiples of {f} "
                              f"(2**(len(ch_mult)-1) for ch_mult={self.config['ch_mult']}); pad or resize the "
                              f"images, or use fewer levels")

    @staticmethod
    def _timesteps(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """t as a (B,) tensor on x's device: a python number or 0-d tensor is broadcast to the batch."""
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            return t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"UNet t of shape {tuple(t.shape)}: expected ({x.shape[0]},) or a scalar")
        return t

    def _class_embedding(self, y: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """(B, 4ch) embedding of the labels y (B,) in 0 .. K-1, NO_CLASS (-1) or None (all "no class")."""
        if y is None:
            y = torch.full((x.shape[0],), NO_CLASS, dtype=torch.int64, device=x.device)
        y = torch.as_tensor(y, device=x.device).long().expand(x.shape[0])  # checked by the callers, no sync here
        return self.class_emb(torch.where(y == NO_CLASS, self.num_classes, y))

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, y: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the output (e.g. eps) for x_t at timestep index t [DDPM App. B]: (B, C, H, W) -> same H, W.

        y: class labels (B,) of a conditional net (num_classes set), added to the time embedding as
        improved-diffusion's class-conditional models do; NO_CLASS (-1) or None is the learned "no class" token.
        An unconditional net refuses labels.
        """
        self._check_input(x)
        temb = self.temb(self._timesteps(t, x))  # (B, 4ch)
        if self.class_emb is not None:
            temb = temb + self._class_embedding(y, x)
        elif y is not None:
            raise ConfigError("UNet: class labels given to an unconditional net (num_classes is None); train with "
                              "--conditional to use classes")
        temb = F.silu(temb)  # the swish each ResBlock applies first
        hs = [self.conv_in(x)]
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(hs[-1], temb)
                hs.append(level.attn[j](h) if len(level.attn) else h)
            if level.downsample is not None:
                hs.append(level.downsample(hs[-1]))
        h = self.mid(hs[-1], temb)
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(torch.cat([h, hs.pop()], dim=1), temb)
                h = level.attn[j](h) if len(level.attn) else h
            if level.upsample is not None:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))  # (B, out_channels, H, W)
