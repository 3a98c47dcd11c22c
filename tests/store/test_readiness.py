"""ddpmkit.store.readiness: why the step-77 Fashion-MNIST model samples noise, and the warning that says so."""

from __future__ import annotations

import pytest

from ddpmkit.config import TrainConfig, load_config
from ddpmkit.store.readiness import ema_decay_at, ema_initial_share, lr_sum, untrained_reasons, warning
from ddpmkit.train.lr_schedule import lr_integral


def test_step_77_of_the_fashion_preset_is_still_in_its_warm_up():
    c = load_config("fashion_mnist").train
    reasons = untrained_reasons(c, 77)
    assert len(reasons) == 1 and "warm-up of 1000 steps" in reasons[0] and "at most 0.0006" in reasons[0]
    assert ema_initial_share(c, 77) < 1e-11  # its EMA warm-up (1 + n) / (10 + n) forgets the initial weights
    line = warning(c, 77, "runs/f", "fashion-mnist")
    assert line.startswith("warning:") and "--resume" in line and "--minutes" in line and "\n" not in line
    assert warning(c, 5000, "runs/f") is None


def test_a_fixed_decay_of_0_9995_holds_96_percent_of_the_initial_weights_at_step_77():
    c = TrainConfig(ema_decay=0.9995, ema_warmup=False, warmup=0, lr=2e-4, steps=50000)
    assert ema_initial_share(c, 77) == pytest.approx(0.9995 ** 77)
    assert any("96%" in r for r in untrained_reasons(c, 77))


def test_decays_and_learning_rates_match_the_trainers():
    from torch import nn

    from ddpmkit.train.power_ema import build_ema

    for c in (TrainConfig(), TrainConfig(ema_warmup=False)):
        ema = build_ema(nn.Linear(1, 1), c)
        assert [ema_decay_at(c, n) for n in range(30)] == [ema.decay_at(n) for n in range(30)]
    power = build_ema(nn.Linear(1, 1), TrainConfig(ema_schedule="power"))
    assert power.decay_at(0) == ema_decay_at(TrainConfig(ema_schedule="power"), 0) == 0.0
    for decay in ("none", "cosine", "linear"):
        c = TrainConfig(lr=1e-3, warmup=7, steps=50, lr_decay=decay)
        for n in (0, 5, 7, 30, 50, 60):
            assert lr_sum(c, n) == pytest.approx(lr_integral(n, c) * c.lr, rel=1e-12)
