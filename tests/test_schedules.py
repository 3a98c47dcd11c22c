"""Schedules: golden values against float64 references written here, and refusal of bad schedules."""

import math

import numpy as np
import pytest

from ddpmkit import schedules
from ddpmkit.errors import ConfigError


def test_linear_is_the_papers_schedule():
    beta = schedules.linear()
    assert beta.dtype == np.float64 and beta.shape == (1000,)
    assert beta[0] == pytest.approx(1e-4, abs=1e-15) and beta[-1] == pytest.approx(0.02, abs=1e-15)
    assert np.allclose(np.diff(beta), (0.02 - 1e-4) / 999, rtol=0, atol=1e-15)


def test_cosine_matches_iddpm_eq_17_written_out():
    T, s = 1000, 0.008
    f = [math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2 for t in range(T + 1)]
    ref = [min(1 - f[t] / f[t - 1], 0.999) for t in range(1, T + 1)]
    beta = schedules.cosine(T)
    assert np.allclose(beta, ref, rtol=1e-9, atol=0)  # 1 - f/f' of nearly equal numbers
    assert beta.max() == pytest.approx(0.999)  # clipped at the end, as [IDDPM Sec. 3.2]
    alpha_bar = np.cumprod(1 - beta)
    assert np.allclose(alpha_bar[:-1], np.array(f[1:T]) / f[0], rtol=1e-10)


@pytest.mark.parametrize(
    "beta",
    [[0.0, 0.1], [0.1, 1.0], [-0.1], [0.1, float("nan")], [[0.1, 0.2]], [], "abc", [0.5, 1.5]],
)
def test_bad_schedules_are_refused(beta):
    with pytest.raises(ConfigError) as err:
        schedules.validate(beta)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("timesteps", [0, -3, 2.5, True])
def test_bad_timesteps_are_refused(timesteps):
    with pytest.raises(ConfigError, match="timesteps"):
        schedules.linear(timesteps)


def test_unknown_name():
    with pytest.raises(ConfigError, match="cosine"):
        schedules.get("quadratic")


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("timesteps", [1, 2, 10, 1000, 4000])
def test_every_schedule_is_valid_for_any_T(name, timesteps):
    beta = schedules.get(name, timesteps)
    alpha_bar = np.cumprod(1 - beta)
    assert np.isfinite(beta).all() and (beta > 0).all() and (beta < 1).all()
    assert (np.diff(alpha_bar) < 0).all()
