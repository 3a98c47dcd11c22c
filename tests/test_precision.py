"""precision.py: `auto` decides by capability (mocked both ways), and only the network runs under autocast."""

import pytest
import torch
from torch import nn

from ddpmkit import precision as P
from ddpmkit.errors import ConfigError
from ddpmkit.guidance import ClassifierFreeGuidance

CPU = torch.device("cpu")


@pytest.fixture
def cpu_with(monkeypatch):
    """Pretend the CPU has these flags (None: unreadable) and oneDNN does or does not run bf16."""

    def set_flags(flags, onednn: bool = True):
        monkeypatch.setattr(P, "cpu_flags", lambda: None if flags is None else frozenset(flags))
        monkeypatch.setattr(P, "onednn_bf16", lambda: onednn)

    return set_flags


@pytest.mark.parametrize("flags, onednn, expected, why", [
    ({"sse4_2", "avx2", "fma"}, True, "fp32", "AVX2"),
    ({"avx2", "avx512f", "avx512bw"}, True, "fp32", "AVX-512 without BF16"),
    ({"avx2", "avx512f", "avx512_bf16"}, True, "bf16", "avx512_bf16"),
    ({"avx2", "avx512f", "amx_bf16", "amx_tile"}, True, "bf16", "amx_bf16"),
    ({"avx2", "avx512f", "avx512_bf16"}, False, "fp32", "oneDNN cannot"),
    (None, True, "fp32", "cannot be read"),
], ids=["avx2", "avx512-no-bf16", "avx512_bf16", "amx", "no-onednn", "no-cpuinfo"])
def test_auto_on_the_cpu_follows_the_capability(cpu_with, flags, onednn, expected, why):
    cpu_with(flags, onednn)
    p = P.decide("auto", "cpu")
    assert p.name == expected and why in p.reason and p.reason.startswith("auto:")
    assert p.dtype == (torch.bfloat16 if expected == "bf16" else None)
    assert why in p.describe() and p.describe().startswith(f"precision: {expected}")


@pytest.mark.parametrize("asked", ["fp32", "bf16", "fp16"])
def test_an_explicit_precision_is_taken_as_asked_whatever_the_cpu(cpu_with, asked):
    cpu_with({"avx2"})
    p = P.decide(asked, CPU)
    assert p.name == asked and p.reason == "as asked"


def test_an_unknown_precision_is_one_line_naming_the_choices():
    with pytest.raises(ConfigError, match="precision 'tf32': choose one of auto, fp32, bf16, fp16"):
        P.decide("tf32", CPU)


@pytest.mark.parametrize("capability, expected", [((7, 5), "fp32"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_on_cuda_follows_the_compute_capability(monkeypatch, capability, expected):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Some GPU")
    p = P.decide("auto", torch.device("cuda", 0))
    assert p.name == expected and f"compute capability {capability[0]}.{capability[1]}" in p.reason


def test_other_devices_stay_fp32():
    assert P.decide("auto", torch.device("meta")).name == "fp32"


def test_cpu_flags_reads_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n")
    assert P.cpu_flags(str(info)) == {"fpu", "avx2", "avx512f", "avx512_bf16"}
    assert P.cpu_flags(str(tmp_path / "missing")) is None


class Recorder(nn.Module):
    """A linear layer that records the dtype its matmul ran in."""

    def __init__(self):
        super().__init__()
        self.lin, self.seen = nn.Linear(4, 4), []

    def forward(self, x, t, y=None):
        out = self.lin(x)
        self.seen.append(out.dtype)
        return out


def test_autocast_runs_the_network_in_bf16_and_returns_fp32():
    net = Recorder()
    wrapped = P.under(net, P.decide("bf16", CPU))
    out = wrapped(torch.randn(3, 4), torch.zeros(3))
    assert net.seen == [torch.bfloat16] and out.dtype == torch.float32
    assert P.under(net, P.decide("fp32", CPU)) is net and P.under(net, None) is net
    assert P.under(wrapped, P.decide("bf16", CPU)) is wrapped  # not wrapped twice


def test_guidance_gets_the_autocast_inside_so_eq6_mixes_fp32_outputs():
    net = Recorder()
    guided = P.under(ClassifierFreeGuidance(net, [0, 1], guidance=2.0), P.decide("bf16", CPU))
    assert isinstance(guided, ClassifierFreeGuidance) and isinstance(guided.model, P.Autocast)
    x = torch.randn(2, 4)
    out = guided(x, torch.zeros(2))
    assert net.seen == [torch.bfloat16] and out.dtype == torch.float32 and out.shape == (2, 4)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (bench/gpu_check.sh runs these)")


@needs_cuda
def test_auto_on_this_gpu_matches_its_compute_capability():
    major, _ = torch.cuda.get_device_capability(0)
    assert P.decide("auto", "cuda").name == ("bf16" if major >= 8 else "fp32")


@needs_cuda
def test_a_bf16_training_step_and_every_sampler_on_the_gpu_stay_finite(tmp_path):
    import numpy as np

    from ddpmkit.config import RunConfig
    from ddpmkit.data.dataset import ImageDataset
    from ddpmkit.samplers import SAMPLERS
    from ddpmkit.train.trainer import Trainer

    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 20, "train.batch_size": 8,
                                      "train.precision": "bf16"})
    tr = Trainer(config, tmp_path, device="cuda", progress=False, dataset=ImageDataset(images, None, "random"))
    for step in range(3):
        loss, applied = tr._train_step(step)
        assert applied and np.isfinite(loss)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in tr.model.parameters())
    net = P.under(tr.ema.model, P.decide("bf16", "cuda"))
    for sampler in SAMPLERS:
        x = tr.diffusion.sample(net, (4, 1, 8, 8), sampler=sampler, steps=5,
                                generator=torch.Generator("cuda").manual_seed(0))
        assert x.dtype == torch.float32 and torch.isfinite(x).all(), sampler
