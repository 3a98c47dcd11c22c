"""Contracts of ddpmkit.train.ema: a constant model, buffers, training weights untouched by EMA sampling, resume."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ddpmkit.config import load_config
from ddpmkit.data import ImageDataset
from ddpmkit.train.ema import EMA
from ddpmkit.train.trainer import Trainer


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def test_a_constant_model_gives_a_constant_ema():
    model = _net()
    for warmup in (True, False):
        ema = EMA(model, decay=0.9999, warmup=warmup)
        for n in range(50):
            ema.update(model, n)
        for name, value in ema.state_dict().items():
            assert torch.equal(value, model.state_dict()[name]), name  # bit for bit, not approximately


def test_parameters_are_averaged_and_buffers_copied_as_documented():
    model = _net()
    ema = EMA(model, decay=0.9, warmup=False)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.train()(torch.randn(8, 3))  # BatchNorm moves its running statistics
    ema.update(model, 0)
    state = ema.state_dict()
    for name, p in model.named_parameters():
        assert torch.allclose(state[name], 0.9 * before[name] + 0.1 * p.detach(), atol=1e-6), name
    for name, b in model.named_buffers():
        assert torch.equal(state[name], b), name  # copied, not averaged
    assert not ema.model.training and not any(p.requires_grad for p in ema.model.parameters())
    assert ema.decay_at(0) == 0.9 and EMA(model, 0.9999).decay_at(0) == 0.1  # warm-up: (1 + n) / (10 + n)
    assert EMA(model, 0.9999).decay_at(10**6) == 0.9999


def test_sampling_with_the_ema_leaves_the_training_weights_exactly_as_they_were(tmp_path):
    config = load_config(None).with_values({
        "model.preset": "tiny", "diffusion.timesteps": 10, "sample.steps": 5, "train.num_samples": 2,
        "train.batch_size": 4, "train.steps": 2, "train.checkpoint_every": 2, "train.sample_every": 1})
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 1), dtype=np.uint8)
    trainer = Trainer(config, tmp_path / "run", progress=False, dataset=ImageDataset(images, None, "random"))
    trainer.run()  # samples after every step, from the EMA
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    ema = {k: v.clone() for k, v in trainer.ema.state_dict().items()}
    assert any(not torch.equal(weights[k], ema[k]) for k in weights)  # two different sets of weights
    trainer.model.train()
    trainer.write_samples()
    assert trainer.model.training and all(p.requires_grad for p in trainer.model.parameters())
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    for name, value in trainer.ema.state_dict().items():
        assert torch.equal(value, ema[name]), name
    # and the EMA survives a resume bit for bit (also checked after every kill in test_reliability.py)
    resumed = Trainer(config.with_values({"train.steps": 3}), tmp_path / "run", resume=True, progress=False,
                      dataset=ImageDataset(images, None, "random"))
    resumed._restore()
    for name, value in resumed.ema.state_dict().items():
        assert torch.equal(value, ema[name]), name
