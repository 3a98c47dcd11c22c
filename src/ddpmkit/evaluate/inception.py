"""The Inception-v3 network of FID, as TensorFlow's 2015-12-05 graph computes it, and a feature extractor on it.

FID [FID] and IS [IS] are defined by one fixed network: the Inception-v3 [Inception] graph that TensorFlow released
as inception-2015-12-05, which the reference FID and IS code runs. pytorch-fid ported its weights to PyTorch
('pt_inception-2015-12-05-6726825d.pth'). This module builds the same network with the same state_dict names, so
those weights load unchanged and the numbers are comparable with papers. Nothing is downloaded: the user converts
the .pth once to safetensors (the README shows the one-line command; ddpmkit itself never unpickles a file) and
passes it with --inception FILE or $DDPMKIT_INCEPTION.

Where the TF graph differs from the paper (and from torchvision's ImageNet model), this follows the graph:
- the average pool in the pool branch of the A, C and first E blocks ignores padded positions
  (count_include_pad=False), as TF's avg_pool with SAME padding does;
- the last E block (Mixed_7c) max-pools in its pool branch;
- the classifier has 1008 outputs (the 1000 ImageNet classes and 8 unused ones);
- every convolution is conv (no bias) + BatchNorm(eps=0.001) + ReLU;
- the input is resized to 299x299 by bilinear interpolation (align_corners=False) and scaled from [0, 255] to [-1, 1].

References:
  [Inception] Szegedy, Vanhoucke, Ioffe, Shlens & Wojna 2016, "Rethinking the Inception Architecture for Computer
              Vision" (arXiv 1512.00567), Table 1; Figs. 5, 6, 7 (the A, C, E blocks) and 10 (grid reduction, B, D)
  [FID] Heusel et al. 2017 (arXiv 1706.08500); [IS] Salimans et al. 2016 (arXiv 1606.03498)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ddpmkit.errors import ConfigError, DataError, UserError
from ddpmkit.store.safeload import check_weights_fit, file_sha256, load_weights_file

INPUT_SIZE = 299
NUM_CLASSES = 1008
FEATURE_DIM = 2048
_MISSING_WEIGHTS = (
    "FID/IS need the Inception weights{where}: pass --inception FILE or set DDPMKIT_INCEPTION (convert pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth to safetensors with the one-line command in the README, section FID and IS); "
    "or use --features FILE from ddpm train-classifier"
)


class BasicConv2d(nn.Module):
    """conv (no bias) + BatchNorm(eps=0.001) + ReLU: every convolution of the graph."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TF averages over the window's valid entries only; PyTorch's default would count the zero padding
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block [Inception Fig. 5]: 1x1, 5x5, double 3x3 and pool branches (the graph keeps a 5x5 branch)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5x5 = self.branch5x5_2(self.branch5x5_1(x))
        b3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5x5, b3x3dbl, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35x35 -> 17x17 [Inception Fig. 10]: strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3x3dbl, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with 7x7 convolutions factorised into 1x7 and 7x1 [Inception Fig. 6, n = 7]."""

    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7x7dbl = self.branch7x7dbl_1(x)
        for conv in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7x7dbl = conv(b7x7dbl)
        return torch.cat([self.branch1x1(x), b7x7, b7x7dbl, self.branch_pool(_avg_pool_3x3(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17x17 -> 8x8 [Inception Fig. 10]: strided 3x3, 7x7 then strided 3x3, and max-pool branches."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3x3 = self.branch3x3_2(self.branch3x3_1(x))
        b7x7x3 = self.branch7x7x3_1(x)
        for conv in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7x7x3 = conv(b7x7x3)
        return torch.cat([b3x3, b7x7x3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded 1x3 / 3x1 filter banks [Inception Fig. 7]; `pool` is "max" in the graph's last one."""

    def __init__(self, cin: int, pool: Literal["avg", "max"]):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3x3 = self.branch3x3_1(x)
        b3x3 = torch.cat([self.branch3x3_2a(b3x3), self.branch3x3_2b(b3x3)], 1)
        b3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3x3dbl = torch.cat([self.branch3x3dbl_3a(b3x3dbl), self.branch3x3dbl_3b(b3x3dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.pool == "max" else _avg_pool_3x3(x)
        return torch.cat([self.branch1x1(x), b3x3, b3x3dbl, self.branch_pool(pooled)], 1)


_MIXED = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c")  # fmt: skip


class FIDInceptionV3(nn.Module):
    """Inception-v3 [Inception Table 1] as the FID graph computes it: (B, 3, 299, 299) in [-1, 1] -> pool3, logits.

    The attribute names are the TF graph's layer names (as in pytorch-fid and torchvision), so that the state_dict
    keys match the converted weights. The dropout before the classifier is left out: it is the identity at
    evaluation, the only use of this network.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, pool="avg")
        self.Mixed_7c = InceptionE(2048, pool="max")
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (B, 192, 35, 35)
        for name in _MIXED:
            x = getattr(self, name)(x)  # ends at (B, 2048, 8, 8)
        pool3 = x.mean(dim=(2, 3))  # (B, 2048): the graph's pool_3, FID's features
        return pool3, self.fc(pool3)


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        got = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
        raise DataError(f"images: expected a uint8 numpy array (N, H, W, C) in [0, 255], got {got}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or min(images.shape) == 0:
        raise DataError(f"images: shape {images.shape}, expected (N, H, W, C) with N, H, W >= 1 and C = 1 or 3")


def _to_input(batch: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, H, W, C) -> float32 (B, 3, 299, 299) in [-1, 1], the graph's input."""
    x = torch.tensor(batch, device=device).permute(0, 3, 1, 2).float()  # (B, C, H, W); copies: numpy may be read-only
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)  # grey: the same intensity in R, G and B
    if x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
    return x * (2.0 / 255.0) - 1.0


class InceptionFeatures:
    """Images -> FID features (pool3, 2048) and 1008 logits with the FID Inception-v3, frozen and in eval mode.

    `name` and `weights_sha256` identify the feature space, for cache keys and reports: FID and IS numbers are only
    comparable between runs that used the same weights.
    """

    name = "inception-v3-fid"
    feature_dim = FEATURE_DIM

    def __init__(self, net: FIDInceptionV3, weights_sha256: str, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval().requires_grad_(False)
        self.weights_sha256 = weights_sha256

    def __call__(self, images: np.ndarray, batch_size: int = 64, progress: bool = False) -> dict[str, np.ndarray]:
        """{"features": float64 (N, 2048), "logits": float64 (N, 1008), "logits_unbiased": float64 (N, 1008)}.

        `logits_unbiased` is pool3 times the classifier's weights without its bias: the reference IS code takes
        the softmax of that product (the graph's softmax/logits/MatMul), so IS matches papers with it; `logits`
        is the classifier's full output.
        """
        _check_images(images)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
        # eval on every call: a .train() elsewhere would make BatchNorm use batch statistics and change the features
        self.net.eval()
        features, logits, unbiased = [], [], []
        with torch.no_grad(), tqdm(total=len(images), unit="img", desc="inception", disable=not progress) as bar:
            for start in range(0, len(images), batch_size):
                batch = images[start : start + batch_size]
                pool3, out = self.net(_to_input(batch, self.device))
                features.append(pool3.double().cpu())
                logits.append(out.double().cpu())
                unbiased.append(F.linear(pool3, self.net.fc.weight).double().cpu())
                bar.update(len(batch))
        return {k: torch.cat(v).numpy() for k, v in
                (("features", features), ("logits", logits), ("logits_unbiased", unbiased))}  # fmt: skip




def _with_batch_counters(net: nn.Module, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add BatchNorm's num_batches_tracked where the file lacks it (older PyTorch and some converters omit it):
    a training counter that evaluation never reads, so its absence must not stop a load."""
    counters = {k: torch.zeros_like(v) for k, v in net.state_dict().items()
                if k.endswith(".num_batches_tracked") and k not in weights}  # fmt: skip
    return {**weights, **counters}


def load_inception(path: str | Path | None = None, device: str | torch.device = "cpu") -> InceptionFeatures:
    """The FID Inception-v3 with the safetensors weights in `path` (default: $DDPMKIT_INCEPTION), frozen, eval mode."""
    if path is None or str(path) == "":
        path = os.environ.get("DDPMKIT_INCEPTION") or None
    if path is None:
        raise UserError(_MISSING_WEIGHTS.format(where=""))
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(_MISSING_WEIGHTS.format(where=f" and {path} is not a file"))
    net = FIDInceptionV3()
    weights = _with_batch_counters(net, load_weights_file(path))
    check_weights_fit(net, weights, str(path))
    net.load_state_dict(weights)
    return InceptionFeatures(net, file_sha256(path), device)


def random_inception(seed: int = 0, device: str | torch.device = "cpu") -> InceptionFeatures:
    """The FID Inception-v3 with random weights drawn from `seed`: the real code path for tests, meaningless numbers.

    Convolutions get He-normal weights [He et al. 2015] so activations keep their scale through the ~50 layers
    (with eval-mode BatchNorm an identity here, PyTorch's default init would shrink them by orders of magnitude).
    The global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FIDInceptionV3()
        for module in net.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return InceptionFeatures(net, hashlib.sha256(f"random-inception-seed-{seed}".encode()).hexdigest(), device)
