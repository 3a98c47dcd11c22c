"""Importance-sampled timesteps [IDDPM Sec. 3.3]: unbiasedness exactly and by Monte Carlo, warm-up, the history,
checkpoint round trips, and the trainer: resume bit for bit, torchrun ranks that agree with one process."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit.cli import main
from ddpmkit.errors import ConfigError, UserError
from ddpmkit.store.checkpoint import load_checkpoint, save_checkpoint
from ddpmkit.train.importance import HISTORY, UNIFORM_MIX, ImportanceTimesteps, UniformTimesteps, timestep_sampler

T = 50


def warm_sampler(seed=0, T=T):
    """An importance sampler fed 10 values per t whose scale spans four orders of magnitude, as L_t does."""
    g = torch.Generator().manual_seed(seed)
    s = ImportanceTimesteps(T)
    scale = torch.logspace(0, -4, T, dtype=torch.float64)  # (T,)
    for _ in range(HISTORY):
        s.update(torch.arange(T), scale * (1 + 0.1 * torch.rand(T, generator=g, dtype=torch.float64)))
    return s


def test_probabilities_are_positive_and_sum_to_one():
    s = warm_sampler()
    s.values[7] = 0.0  # a term that is exactly zero still gets the uniform share
    p = s.probabilities()
    assert s.warm and p.dtype == torch.float64 and p.shape == (T,)
    assert (p > 0).all() and float(p.min()) >= UNIFORM_MIX / T * (1 - 1e-12)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    root = (s.values**2).mean(1).sqrt()
    expected = (1 - UNIFORM_MIX) * root / root.sum() + UNIFORM_MIX / T  # p_t ~ sqrt(E[L_t^2]) [IDDPM Sec. 3.3]
    assert torch.allclose(p, expected, rtol=1e-12)


def test_uniform_and_unweighted_until_every_t_has_ten_values():
    s, uniform = ImportanceTimesteps(T), UniformTimesteps(T)
    for _ in range(HISTORY - 1):
        s.update(torch.arange(T), torch.rand(T, dtype=torch.float64))
    s.update(torch.arange(T - 1), torch.rand(T - 1, dtype=torch.float64))  # t = T-1 has 9 values only
    assert not s.warm
    assert torch.equal(s.probabilities(), uniform.probabilities())
    t, w = s.sample(64, torch.Generator().manual_seed(3))
    t_u, w_u = uniform.sample(64, torch.Generator().manual_seed(3))
    assert torch.equal(t, t_u) and w is None and w_u is None  # the very draws of the uniform sampler
    s.update(torch.tensor([T - 1]), torch.tensor([1.0], dtype=torch.float64))
    assert s.warm and not torch.allclose(s.probabilities(), uniform.probabilities())


def test_weighting_keeps_the_uniform_expectation_exactly():
    # E_{t ~ p}[w_t L_t] = sum_t p_t L_t / (T p_t) = mean_t L_t [IDDPM Eq. 18 setup]
    s = warm_sampler()
    p = s.probabilities()
    L = (s.values**2).mean(1).sqrt() * (1 + torch.linspace(-0.5, 0.5, T, dtype=torch.float64))
    w = 1.0 / (T * p)
    assert float((p * w * L).sum()) == pytest.approx(float(L.mean()), rel=1e-12)


def test_monte_carlo_weighted_loss_matches_the_uniform_one_with_less_variance():
    s = warm_sampler()
    L = (s.values**2).mean(1).sqrt()  # the terms the history describes
    n = 200_000
    t, w = s.sample(n, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and int(t.min()) >= 0 and int(t.max()) < T
    assert torch.allclose(w, 1.0 / (T * s.probabilities()[t]))
    estimate = w * L[t]
    se = float(estimate.std()) / n**0.5
    assert abs(float(estimate.mean()) - float(L.mean())) <= 4 * se + 1e-15
    freq = torch.bincount(t, minlength=T).double() / n  # the draws follow p
    p = s.probabilities()
    assert torch.all((freq - p).abs() <= 5 * (p * (1 - p) / n).sqrt() + 1e-4)
    t_u, _ = UniformTimesteps(T).sample(n, torch.Generator().manual_seed(0))
    assert float(estimate.var()) < 0.01 * float(L[t_u].var())  # the point of it: a far less noisy estimate


def reference_second_moments(T, batches):
    """IDDPM's LossSecondMomentResampler update, element by element: shift out the oldest when full."""
    history = [[] for _ in range(T)]
    for t, term in batches:
        for ti, li in zip(t.tolist(), term.tolist()):
            history[ti] = (history[ti] + [li])[-HISTORY:]
    return [np.mean(np.square(h)) if len(h) == HISTORY else None for h in history], [len(h) for h in history]


def test_history_keeps_the_last_ten_values_of_each_t_as_iddpm_does():
    g = torch.Generator().manual_seed(1)
    s, batches = ImportanceTimesteps(6), []
    for size in (3, 40, 7, 64, 1, 25):  # batches with many repeats of one t, more than 10 of some
        t = torch.randint(0, 6, (size,), generator=g) if size != 25 else torch.full((25,), 2)
        batches.append((t, torch.rand(size, generator=g, dtype=torch.float64)))
        s.update(*batches[-1])
    moments, lengths = reference_second_moments(6, batches)
    assert s.count.tolist() == [sum(int((b[0] == i).sum()) for b in batches) for i in range(6)]
    assert [min(c, HISTORY) for c in s.count.tolist()] == lengths
    for i, m in enumerate(moments):
        if m is not None:
            assert float((s.values[i] ** 2).mean()) == pytest.approx(m, rel=1e-12)


def test_state_round_trips_through_a_checkpoint(tmp_path):
    s = warm_sampler()
    s.update(torch.tensor([3, 3, 4]), torch.tensor([9.0, 8.0, 7.0], dtype=torch.float64))
    path = save_checkpoint(tmp_path, 5, weights={"model": {"w": torch.zeros(1)}}, state={"timesteps": s.state_dict()})
    restored = ImportanceTimesteps(T)
    restored.load_state_dict(load_checkpoint(path).state["timesteps"])
    assert torch.equal(restored.values, s.values) and torch.equal(restored.count, s.count)
    a, b = s.sample(32, torch.Generator().manual_seed(9)), restored.sample(32, torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(UserError, match="T = 50"):
        ImportanceTimesteps(T + 1).load_state_dict(s.state_dict())


def test_sampler_choice_and_config_validation():
    from ddpmkit.config import TrainConfig

    assert type(timestep_sampler("auto", "vlb", 10)) is ImportanceTimesteps
    assert type(timestep_sampler("auto", "hybrid", 10)) is UniformTimesteps
    assert type(timestep_sampler("uniform", "vlb", 10)) is UniformTimesteps
    with pytest.raises(ConfigError, match="importance"):
        TrainConfig(loss="hybrid", timestep_sampler="importance")
    with pytest.raises(ConfigError, match=r"\['auto', 'importance', 'uniform'\]"):
        TrainConfig(timestep_sampler="stratified")


# T = 5 with a global batch of 16: every t has 10 values after a few steps, so most steps draw from p.
VLB = ["--set", "model.preset=\"tiny\"", "--set", "diffusion.timesteps=5", "--set", "sample.steps=5",
       "--set", "diffusion.variance=\"learned_range\"", "--set", "train.loss=\"vlb\"", "--set", "train.num_samples=4",
       "--set", "train.log_every=5", "--batch-size", "16", "--sample-every", "100", "--no-progress"]


def final_state(run: Path, step: int):
    ckpt = load_checkpoint(run / "checkpoints" / f"step_{step:09d}")
    return ckpt.weights["model"], ckpt.state["timesteps"]


def test_vlb_run_importance_samples_and_resumes_bit_for_bit(tmp_path):
    assert main(["train", "--out", str(tmp_path / "straight"), "--steps", "10", "--checkpoint-every", "5", *VLB]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--steps", "5", "--checkpoint-every", "5", *VLB]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--steps", "10", "--checkpoint-every", "5",
                 *VLB]) == 0
    weights, history = final_state(tmp_path / "straight", 10)
    weights_split, history_split = final_state(tmp_path / "split", 10)
    _, history_at_5 = final_state(tmp_path / "straight", 5)
    assert int(history["count"].sum()) == 10 * 16 and int(history_at_5["count"].min()) >= HISTORY  # warm by step 5
    assert torch.equal(history["values"], history_split["values"]) and torch.equal(history["count"],
                                                                                   history_split["count"])
    for k in weights:
        assert torch.equal(weights[k], weights_split[k]), k


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_torchrun_ranks_keep_the_history_of_the_global_batch(tmp_path):
    # fp32: under bf16 each rank rounds its half batch its own way, and the 1e-4 comparison below would not hold
    common = ["--steps", "8", "--checkpoint-every", "8", *VLB, "--set", 'train.precision="fp32"']
    assert main(["train", "--out", str(tmp_path / "one"), *common]) == 0
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "ddpmkit.cli", "train",
                           "--out", str(tmp_path / "two"), *common], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (w1, h1), (w2, h2) = final_state(tmp_path / "one", 8), final_state(tmp_path / "two", 8)
    assert torch.equal(h1["count"], h2["count"])  # the same t were drawn, from the same p, on both
    assert torch.allclose(h1["values"], h2["values"], rtol=1e-4, atol=1e-6)
    for k in w1:
        assert torch.allclose(w1[k], w2[k], rtol=1e-4, atol=1e-6), k
