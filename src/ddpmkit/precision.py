"""Which arithmetic the network runs in: fp32, or bf16/fp16 autocast, chosen by what the device can do.

    p = ddpmkit.precision.decide("auto", torch.device("cpu"))
    print(p.describe())        # "precision: bf16 autocast (auto: the CPU has avx512_bf16 ...)"
    with p.autocast():         # the network's convolutions and matmuls in bf16
        eps = model(x_t, t)

`auto` picks bf16 autocast where the hardware has native bf16 arithmetic, fp32 elsewhere:
  - CUDA: a device of compute capability 8.0 or newer (torch.cuda.is_bf16_supported without emulation).
  - CPU: AVX-512 BF16 or AMX-BF16 in the CPU's flags (/proc/cpuinfo), and oneDNN able to run bf16 here
    (torch.ops.mkldnn._is_mkldnn_bf16_supported). An AVX2-only CPU emulates bf16 about 40x slower than fp32, and
    an AVX-512 CPU without the BF16 extension converts on every load: both stay fp32. Other CPUs (ARM, or where
    the flags cannot be read) stay fp32: not measured.
It decides by capability, never by the device's type alone, and the same answer every time on one machine, so a
run resumed there trains in the same precision (bit for bit). On this project's CPU (AMD EPYC, avx512_bf16) the
shipped presets train faster in bf16 at one thread (the digits preset 1.1-1.2x, mnist28 1.8x), but the smallest
networks do not (the test preset `tiny` 0.8x, the budget planner's 177k-parameter digits candidate 0.85x), so a
run planned with `ddpm train --minutes` (train/budget.py), which times its candidate networks anyway, times each in
bf16 and in fp32 and writes the faster into the run's config: that is decided per network, once, at the start, and
a resume reads it back. docs/PERFORMANCE.md has the tables.

Only the network runs under autocast: master weights, optimizer state, EMA, checkpoints, the schedule tables, the
solvers' arithmetic and the bound stay in fp32/fp64 (`Autocast` returns the network's output as fp32).
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ConfigError

CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 flags of native bf16 dot products (AVX-512 BF16, AMX)


@dataclass(frozen=True)
class Precision:
    """A decision: `name` (fp32 | bf16 | fp16), the device it is for, and why."""

    name: str
    device: torch.device
    reason: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype, or None for plain fp32."""
        return DTYPES[self.name]

    def autocast(self):
        """A context that runs what is inside under this precision's autocast (nothing for fp32)."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def describe(self) -> str:
        what = "fp32" if self.dtype is None else f"{self.name} autocast (weights, optimizer, EMA, checkpoints fp32)"
        return f"precision: {what} ({self.reason})"


@functools.lru_cache(maxsize=1)
def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str] | None:
    """The CPU's feature flags (the `flags` line of /proc/cpuinfo), or None where they cannot be read."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def onednn_bf16() -> bool:
    """Whether torch's oneDNN can run bf16 convolutions and matmuls on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_bf16() -> tuple[bool, str]:
    """(native bf16 arithmetic on this CPU, why): the flags say so and oneDNN can use them."""
    flags = cpu_flags()
    if flags is None:
        return False, "the CPU's flags cannot be read (no /proc/cpuinfo), so bf16 is not known to be fast"
    found = [f for f in CPU_BF16_FLAGS if f in flags]
    if not found:
        isa = "AVX-512 without BF16" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX-512/AVX2"
        return False, f"the CPU has {isa} ({', '.join(CPU_BF16_FLAGS)} absent): bf16 would be emulated, slower"
    if not onednn_bf16():
        return False, f"the CPU has {found[0]} but this torch's oneDNN cannot use it"
    return True, f"the CPU has {found[0]}: native bf16 dot products"


def cuda_bf16(device: torch.device) -> tuple[bool, str]:
    """(native bf16 on this CUDA device, why): compute capability 8.0 or newer."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    name, (major, minor) = torch.cuda.get_device_name(index), torch.cuda.get_device_capability(index)
    native = major >= 8
    return native, f"{name}, compute capability {major}.{minor}: {'native' if native else 'no native'} bf16"


CAPABILITY = {"cpu": cpu_bf16, "cuda": cuda_bf16}


def bf16_capability(device: torch.device) -> tuple[bool, str]:
    """(whether `device` has native bf16 arithmetic, the evidence)."""
    probe = CAPABILITY.get(device.type)
    if probe is None:
        return False, f"{device.type}: bf16 speed not measured here"
    return probe(device) if device.type == "cuda" else probe()


def decide(requested: str, device: torch.device | str) -> Precision:
    """The precision of `requested` (auto | fp32 | bf16 | fp16) on `device`, with the reason."""
    device = torch.device(device)
    if requested not in CHOICES:
        raise ConfigError(f"precision {requested!r}: choose one of {', '.join(CHOICES)}")
    if requested != "auto":
        return Precision(requested, device, "as asked")
    native, why = bf16_capability(device)
    return Precision("bf16" if native else "fp32", device, f"auto: {why}")


class Autocast(nn.Module):
    """`model` run under `precision`'s autocast, its output returned as fp32: for the samplers and the bound,
    whose arithmetic around the network stays fp32/fp64. Calls pass through (x_t, t, and any labels)."""

    def __init__(self, model: nn.Module, precision: Precision):
        super().__init__()
        self.model, self.precision = model, precision

    def forward(self, *args, **kwargs):
        with self.precision.autocast():
            out = self.model(*args, **kwargs)
        return out.float() if out.is_floating_point() else out


def under(model, precision: Precision | None):
    """`model` with its network under `precision`'s autocast (Autocast), or `model` itself for fp32 / None.
    A classifier-free guidance wrapper gets the autocast inside it, so Eq. 6's mix stays fp32."""
    if precision is None or precision.dtype is None or isinstance(model, Autocast):
        return model
    from .guidance import ClassifierFreeGuidance

    if isinstance(model, ClassifierFreeGuidance):
        return ClassifierFreeGuidance(under(model.model, precision), model.classes, model.guidance)
    return Autocast(model, precision)
