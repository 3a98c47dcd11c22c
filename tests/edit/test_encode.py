"""Encoding along the probability-flow ODE against its closed form for Gaussian data.

For x_0 ~ N(mu, Sigma) the flow from alpha_bar_s to alpha_bar_t is linear and known exactly (oracle.flow:
x_t = a_t mu + C_t^(1/2) C_s^(-1/2) (x_s - a_s mu), C = ab Sigma + (1 - ab) I). The encoder starts at node 0 from
alpha_0 x_0 + sigma_0 eps(alpha_0 x_0) and then solves the ODE up to T - 1, so its x_T is compared with the exact
flow from that start; the oracle's exact denoiser leaves the solver's discretisation error alone. Correlated data
(a rotated covariance with stds 0.6 .. 1.1, as tests/samplers/test_order.py for its floor) in six dimensions,
T = 1000 linear, float64, nothing clipped. Measured with this file's code (torch 2.13 CPU):
    ddim     K = 5 .. 80:  errors 0.63 .. 0.038, fitted order 1.01
    dpm++2m  K = 10 .. 80: errors 0.082 .. 0.0013, fitted order 2.0
Tolerance 0.2 on the order. With the 2M weight 0.6 for 0.5 (tested) the fitted order drops to about 1.
Decoding the exact x_T (the flow from x_0 itself) with dpm++2m gives x_0 back to the solver's accuracy: largest error
0.035, 0.014, 0.0036, 0.00086 at K = 10, 20, 40, 80; encode-then-decode: 0.028, 0.00098, 3.7e-5, 1.5e-5 (the
two directions' errors largely cancel). Asserted: both fall at every K and end below 1e-3.
"""

import numpy as np
import pytest
import torch

from ddpmkit import Diffusion, oracle
from ddpmkit.edit import ode_encode
from ddpmkit.samplers import dpm_solver

S = torch.linspace(0.6, 1.1, 6, dtype=torch.float64)
MU = torch.tensor([0.05, 0.0, 0.05, 0.0, 0.05, 0.0], dtype=torch.float64)
CASES = {"ddim": ([5, 10, 20, 40, 80], 1), "dpm++2m": ([10, 20, 40, 80], 2)}


def setting():
    d = Diffusion.from_name("linear", 1000)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    model = oracle.gaussian_mixture_full(d, MU[None], (q @ torch.diag(S**2) @ q.T)[None], [1.0])
    x0 = model.sample(8, torch.Generator().manual_seed(1))[0].clamp(-1, 1)
    return d, model, x0


def encode_errors(sampler: str) -> tuple[float, np.ndarray]:
    d, model, x0 = setting()
    ab = d.alpha_bar.double()
    start = ab[0].sqrt() * x0
    start = start + (1 - ab[0]).sqrt() * d.p_mean_variance(model, start, torch.zeros(8, dtype=torch.int64),
                                                           clip_denoised=False)["eps_pred"]
    exact = model.flow(start, ab[0], ab[-1])
    ks, _ = CASES[sampler]
    errors = np.array([float((ode_encode(d, model, x0, sampler=sampler, steps=k, clip_denoised=False) - exact)
                             .abs().max()) for k in ks])
    return -np.polyfit(np.log(ks), np.log(errors), 1)[0], errors


@pytest.mark.parametrize("sampler", list(CASES))
def test_encoding_converges_to_the_exact_flow_at_the_solvers_order(sampler):
    slope, errors = encode_errors(sampler)
    print(sampler, slope, errors)
    assert abs(slope - CASES[sampler][1]) <= 0.2, (slope, errors)
    assert (np.diff(errors) < 0).all()


def test_the_order_test_fails_for_a_wrong_coefficient(monkeypatch):
    monkeypatch.setattr(dpm_solver, "AB2_WEIGHT", 0.6)  # 0.5 is [DPMS++ Alg. 2]
    slope, _ = encode_errors("dpm++2m")
    assert slope < 2 - 0.2, slope


def test_decoding_the_exact_x_T_and_the_round_trip_give_x0_back():
    d, model, x0 = setting()
    exact_x_T = model.flow(x0, 1.0, d.alpha_bar.double()[-1])
    decoded, round_trip = [], []
    for k in (10, 20, 40, 80):
        decoded.append(float((d.sample(model, x0.shape, x_T=exact_x_T, sampler="dpm++2m", steps=k,
                                       clip_denoised=False) - x0).abs().max()))
        x_T = ode_encode(d, model, x0, sampler="dpm++2m", steps=k, clip_denoised=False)
        round_trip.append(float((d.sample(model, x0.shape, x_T=x_T, sampler="dpm++2m", steps=k,
                                          clip_denoised=False) - x0).abs().max()))
    print("decode exact x_T", decoded, "round trip", round_trip)
    assert (np.diff(decoded) < 0).all() and decoded[-1] < 1e-3
    assert (np.diff(round_trip) < 0).all() and round_trip[-1] < 1e-3
