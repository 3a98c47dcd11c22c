"""Where a K-step sampler's nodes lie: uniform in t, in log-SNR, or Karras' rho = 7 spacing in sigma."""

import numpy as np
import pytest

from ddpmkit import schedules
from ddpmkit.errors import ConfigError
from ddpmkit.samplers import SPACINGS, timestep_nodes


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize("schedule, T", [("linear", 1000), ("cosine", 1000), ("cosine", 4000), ("linear", 2),
                                         ("linear", 7)])
def test_nodes_are_k_distinct_integers_from_0_to_T_minus_1(spacing, schedule, T):
    alpha_bar = np.cumprod(1 - schedules.get(schedule, T))
    for k in sorted({1, 2, 3, 5, 20, 200, T // 2, T - 1, T} & set(range(1, T + 1))):
        t = timestep_nodes(alpha_bar, k, spacing)
        assert len(t) == k and t.dtype == np.int64
        assert t[-1] == T - 1 and (k == 1 or t[0] == 0)
        assert (np.diff(t) > 0).all()


def test_logsnr_nodes_are_even_in_lambda_where_the_integers_allow():
    alpha_bar = np.cumprod(1 - schedules.get("linear", 1000))
    lam = np.log(alpha_bar / (1 - alpha_bar))
    t = timestep_nodes(alpha_bar, 20, "logsnr")
    steps = -np.diff(lam[t])  # lambda falls with t
    even = (lam[0] - lam[-1]) / 19
    assert np.allclose(steps[1:], even, rtol=0.15)  # rounding to integers moves a node by < one timestep
    # near t = 0 the first timesteps are further apart in lambda than `even` (0.79 of it from t = 0 to 1, where
    # the next target, 1.02 away, rounds to t = 1 too); the next node is pushed to t = 1
    assert list(t[:2]) == [0, 1]


def test_karras_nodes_follow_rho_7_in_sigma():
    # on the linear schedule (the cosine one jumps from sigma 641 to 16346 at its last timestep, so there the top
    # targets crowd onto consecutive timesteps)
    alpha_bar = np.cumprod(1 - schedules.get("linear", 1000))
    sigma = np.sqrt((1 - alpha_bar) / alpha_bar)
    t = timestep_nodes(alpha_bar, 30, "karras")
    ramp = np.linspace(sigma[-1] ** (1 / 7), sigma[0] ** (1 / 7), 30) ** 7  # [EDM Eq. 5], high to low
    assert np.allclose(sigma[t][::-1], ramp, rtol=0.05)  # measured: within 4.3%


def test_uniform_spacing_is_the_respaced_subsequence_of_before():
    alpha_bar = np.cumprod(1 - schedules.get("linear", 1000))
    assert list(timestep_nodes(alpha_bar, 4, "uniform")) == [0, 333, 666, 999]


def test_bad_spacing_or_steps():
    alpha_bar = np.cumprod(1 - schedules.get("linear", 10))
    with pytest.raises(ConfigError, match="spacing 'even' is not one of"):
        timestep_nodes(alpha_bar, 3, "even")
    for k in (0, 11):
        with pytest.raises(ConfigError, match="between 1 and T = 10"):
            timestep_nodes(alpha_bar, k, "logsnr")
