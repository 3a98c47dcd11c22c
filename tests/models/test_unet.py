"""Contracts of the DDPM U-Net [DDPM App. B]: parameter count, shapes, errors, time embedding, dtypes, layouts."""

import json
import math

import pytest
import torch

from ddpmkit.errors import ConfigError
from ddpmkit.models import PRESETS, UNet
from ddpmkit.models.layers import group_count, timestep_embedding

torch.set_num_threads(2)


def randomize_(net: UNet, seed: int = 0) -> UNet:
    """Give the zero-initialised layers (conv2, proj_out, conv_out) random weights, so outputs depend on inputs."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


def tiny(**overrides) -> UNet:
    torch.manual_seed(0)
    return randomize_(UNet.from_preset("tiny", **overrides)).eval()


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- the paper's model --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar10() -> UNet:
    return UNet.from_preset("cifar10").eval()


def test_cifar10_preset_has_the_original_parameter_count_and_shape(cifar10):
    net = cifar10
    assert n_params(net) == 35_746_307  # the paper's "35.7M", exactly the original TF implementation
    assert net.config["num_groups"] == 32 and all(m.num_groups == 32 for m in net.modules()
                                                  if isinstance(m, torch.nn.GroupNorm))
    with torch.no_grad():
        out = net(torch.randn(1, 3, 32, 32), torch.tensor([999]))
    assert out.shape == (1, 3, 32, 32)


def test_cifar10_structure_follows_appendix_b(cifar10):
    net = cifar10
    assert [len(level.block) for level in net.down] == [2, 2, 2, 2]
    assert [len(level.block) for level in net.up] == [3, 3, 3, 3]  # num_res_blocks + 1, one skip each
    assert [len(level.attn) > 0 for level in net.down] == [False, True, False, False]  # 16x16 only
    assert [len(level.attn) > 0 for level in net.up] == [False, True, False, False]
    assert net.temb.dense0.in_features == 128 and net.temb.dense1.out_features == 512


@pytest.mark.parametrize("name", ["celebahq256", "lsun256"])
def test_256_presets_are_the_papers_114m_network(name):
    with torch.device("meta"):  # the shapes without the 455 MB of weights
        net = UNet.from_preset(name)
    print(f"{name}: {n_params(net):,} parameters")
    assert n_params(net) == 113_673_219 and round(n_params(net) / 1e6) == 114  # [DDPM App. B]: "114 million"
    assert net.config["ch_mult"] == (1, 1, 2, 2, 4, 4) and net.config["num_res_blocks"] == 2
    assert [len(level.attn) for level in net.down] == [0, 0, 0, 0, 2, 0]  # attention at 256 / 2**4 = 16x16 only
    assert [len(level.attn) for level in net.up] == [0, 0, 0, 0, 3, 0] and net.config["dropout"] == 0.0


def test_fresh_net_outputs_zero_like_the_original_init():
    net = UNet.from_preset("tiny")
    assert not net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2])).any()


@pytest.mark.parametrize("name", sorted(set(PRESETS) - {"cifar10", "celebahq256", "lsun256"}))
def test_every_small_preset_builds_and_runs_at_its_image_size(name):
    net = UNet.from_preset(name).eval()
    c = net.config
    assert c == {**PRESETS[name], "num_groups": 32} and PRESETS["fashion_mnist"] == PRESETS["mnist28"]
    with torch.no_grad():
        out = net(torch.zeros(1, c["in_channels"], c["image_size"], c["image_size"]), 0)
    assert out.shape == (1, c["out_channels"], c["image_size"], c["image_size"])


# --- forward, backward, shapes ------------------------------------------------------------------------------------

SHAPES = [  # in_channels, out_channels, H, W, ch_mult, attn_resolutions, image_size
    (1, 1, 8, 8, (1, 2), (4,), 8),
    (3, 6, 8, 12, (1, 2), (4,), 8),  # non-square, out != in
    (2, 2, 16, 8, (1, 2, 2), (8, 4), 16),  # three levels, attention at two of them
    (3, 3, 6, 10, (1,), (), 6),  # one level: any size, no resampling
]


@pytest.mark.parametrize("in_ch, out_ch, H, W, ch_mult, attn, size", SHAPES)
def test_forward_backward_shapes_and_finite_grads(in_ch, out_ch, H, W, ch_mult, attn, size):
    net = tiny(in_channels=in_ch, out_channels=out_ch, ch_mult=ch_mult, attn_resolutions=attn, image_size=size)
    net.train()
    x = torch.randn(3, in_ch, H, W, requires_grad=True)
    out = net(x, torch.tensor([0, 10, 999]))
    assert out.shape == (3, out_ch, H, W) and out.dtype == torch.float32
    out.square().mean().backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_narrow_widths_use_a_dividing_group_count_with_two_or_more_channels_per_group():
    assert [group_count(c) for c in (128, 256, 384, 512, 64, 96)] == [32] * 6  # the paper's 32 groups
    assert [group_count(c) for c in (48, 40, 32, 16, 12, 7, 2, 1)] == [24, 20, 16, 8, 6, 1, 1, 1]
    assert group_count(64, num_groups=8) == 8
    net = tiny(ch=12)  # widths 12, 24 and the concatenations 36, 48
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert all(m.num_channels % m.num_groups == 0 and m.num_channels // m.num_groups >= 2 for m in norms)
    assert net(torch.randn(1, 1, 8, 8), 3).shape == (1, 1, 8, 8)


# --- errors -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, words", [
    ((2, 1, 7, 8), "multiples of 2"),
    ((2, 1, 8, 9), "multiples of 2"),
    ((2, 3, 8, 8), "in_channels"),
    ((1, 8, 8), "(B, 1, H, W)"),
])
def test_bad_input_gives_config_error(shape, words):
    with pytest.raises(ConfigError) as info:
        tiny()(torch.randn(shape), 0)
    message = str(info.value)
    assert words in message and "\n" not in message


def test_bad_t_shape_is_rejected():
    with pytest.raises(ValueError, match="expected"):
        tiny()(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3]))


def test_unknown_preset_and_override_give_config_error():
    with pytest.raises(ConfigError, match="cifar10.*digits"):
        UNet.from_preset("cifar100")
    with pytest.raises(ConfigError, match="num_res_block.*allowed: in_channels"):
        UNet.from_preset("tiny", num_res_block=3)


@pytest.mark.parametrize("overrides, words", [
    (dict(attn_resolutions=(16,)), "allowed: [8, 4]"),
    (dict(image_size=6, ch_mult=(1, 2, 2)), "multiple of 4"),
    (dict(ch=2), "ch=2"),
    (dict(ch_mult=()), "ch_mult"),
    (dict(dropout=1.0), "[0, 1)"),
    (dict(num_res_blocks=0), "positive integer"),
])
def test_impossible_config_gives_config_error(overrides, words):
    with pytest.raises(ConfigError) as info:
        UNet.from_preset("tiny", **overrides)
    assert words in str(info.value)


# --- config, time embedding, conditioning on t --------------------------------------------------------------------


def test_config_rebuilds_the_same_architecture_even_through_json():
    net = tiny(ch_mult=(1, 2, 2), attn_resolutions=(4, 2), num_res_blocks=2, ch=8, dropout=0.1)
    assert type(net.config) is dict
    for config in (net.config, json.loads(json.dumps(net.config))):  # a checkpoint manifest stores lists
        rebuilt = UNet(**config)
        assert rebuilt.config == net.config
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in net.state_dict().items()}
        rebuilt.load_state_dict(net.state_dict())


def test_sinusoidal_embedding_matches_float64_formula():
    t = torch.tensor([0, 1, 2, 7, 100, 500, 998, 999])
    for dim in (32, 128, 33):
        half = dim // 2
        freq = [10000.0 ** (-i / (half - 1)) for i in range(half)]
        ref = torch.tensor([[math.sin(s * f) for f in freq] + [math.cos(s * f) for f in freq] + [0.0] * (dim % 2)
                            for s in t.tolist()], dtype=torch.float64)
        emb = timestep_embedding(t, dim)
        assert emb.dtype == torch.float32 and emb.shape == (len(t), dim)
        torch.testing.assert_close(emb.double(), ref, atol=2e-4, rtol=0)
    half_t = timestep_embedding(torch.tensor([0.5]), 4).double()  # continuous time: w = [1, 1e-4]
    torch.testing.assert_close(half_t, torch.tensor([[math.sin(0.5), math.sin(5e-5), math.cos(0.5),
                                                     math.cos(5e-5)]], dtype=torch.float64), atol=1e-6, rtol=0)


def test_time_embedding_separates_timesteps_and_stays_float32_under_autocast():
    net = tiny()
    t = torch.arange(0, 1000, 37)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert timestep_embedding(t, 16).dtype == torch.float32
    emb = net.temb(t)  # (len(t), 4ch)
    assert torch.cdist(emb, emb).add(torch.eye(len(t)) * 1e9).min() > 1e-3


def test_output_depends_on_t_and_scalar_t_broadcasts():
    net = tiny()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out_0, out_500 = net(x, torch.tensor([0, 0])), net(x, torch.tensor([500, 500]))
        assert (out_0 - out_500).abs().max() > 1e-3
        torch.testing.assert_close(net(x, 500), out_500)
        torch.testing.assert_close(net(x, torch.tensor(500)), out_500)
        torch.testing.assert_close(net(x, torch.tensor([500.0, 500.0])), out_500)  # float t, continuous time
        per_sample = net(x, torch.tensor([0, 500]))
    torch.testing.assert_close(per_sample, torch.stack([out_0[0], out_500[1]]))


# --- precision, memory layout, compile ----------------------------------------------------------------------------


def test_bf16_autocast_is_finite_and_close_to_fp32():
    net = tiny(ch=32)
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 500, 999])
    with torch.no_grad():
        ref = net(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x, t)
    assert torch.isfinite(out).all()
    assert (out.float() - ref).norm() / ref.norm() < 5e-2


def test_channels_last_gives_the_same_result_as_contiguous():
    net = tiny(in_channels=3, out_channels=3, ch_mult=(1, 2, 2), attn_resolutions=(8, 4), image_size=16)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 400])
    with torch.no_grad():
        ref = net(x, t)
        torch.testing.assert_close(net(x.to(memory_format=torch.channels_last), t), ref, atol=1e-5, rtol=1e-4)
        net = net.to(memory_format=torch.channels_last)
        torch.testing.assert_close(net(x.to(memory_format=torch.channels_last), t), ref, atol=1e-5, rtol=1e-4)


def test_forward_traces_as_one_graph_for_torch_compile():
    net = tiny()
    compiled = torch.compile(net, backend="eager", fullgraph=True)  # fullgraph: any graph break raises
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([5, 900])
    with torch.no_grad():
        torch.testing.assert_close(compiled(x, t), net(x, t))
