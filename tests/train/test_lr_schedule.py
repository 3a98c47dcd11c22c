"""ddpmkit.train.lr_schedule: the paper's warm-up unchanged, cosine and linear decay to the last step."""

from __future__ import annotations

import math

import pytest

from ddpmkit.config import TrainConfig
from ddpmkit.train.lr_schedule import lr_at, lr_integral


def test_constant_is_the_papers_linear_warm_up_then_lr():
    c = TrainConfig(lr=2e-4, warmup=1000, steps=5000)
    for step in (0, 76, 999, 1000, 4999):
        assert lr_at(step, c) == 2e-4 * min(1.0, (step + 1) / 1000)
    assert lr_at(3, TrainConfig(lr=1e-3, warmup=0)) == 1e-3


@pytest.mark.parametrize("decay, half", [("cosine", 0.5), ("linear", 0.5)])
def test_decays_start_at_lr_halve_midway_and_reach_zero(decay, half):
    c = TrainConfig(lr=1e-3, warmup=10, steps=110, lr_decay=decay)
    assert lr_at(9, c) == pytest.approx(1e-3)  # end of warm-up
    assert lr_at(10, c) == pytest.approx(1e-3)
    assert lr_at(60, c) == pytest.approx(half * 1e-3)
    assert lr_at(110, c) == pytest.approx(0.0, abs=1e-15)
    assert lr_at(35, c) == pytest.approx(1e-3 * (0.5 * (1 + math.cos(math.pi * 0.25)) if decay == "cosine" else 0.75))


def test_lr_integral_of_step_77_in_a_1000_step_warm_up():
    # sum_{k=1}^{77} k / 1000 = 77 * 78 / 2000 = 3.003 full-learning-rate steps
    assert lr_integral(77, TrainConfig(lr=2e-4, warmup=1000, steps=50000)) == pytest.approx(3.003)
