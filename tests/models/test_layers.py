"""layers.py against the authors' initialisation."""

import math

import torch

from ddpmkit.models.layers import AttnBlock


def test_fused_qkv_has_the_spread_of_three_separate_fan_avg_layers():
    # The authors' q, k, v are separate C -> C NIN layers, each fan-avg uniform: bound sqrt(6 / (C + C)), standard
    # deviation bound / sqrt(3). One fan-avg init of the fused C -> 3C matrix would give bound sqrt(6 / (C + 3C)),
    # 1/sqrt(2) of it: this test fails for that init (checked once by restoring it).
    ch = 128
    torch.manual_seed(0)
    w = AttnBlock(ch, 32).qkv.weight.detach().double()
    bound = math.sqrt(6.0 / (2 * ch))
    for part in w.chunk(3, dim=0):
        assert float(part.abs().max()) <= bound
        assert abs(float(part.std()) / (bound / math.sqrt(3)) - 1) < 0.03  # 16,384 draws: about 0.6% spread
    assert float(AttnBlock(ch, 32).qkv.bias.detach().abs().max()) == 0.0
