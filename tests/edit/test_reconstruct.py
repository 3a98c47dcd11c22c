"""Reconstruction from x_t (DDPM Fig. 7) against the exact posterior of a Gaussian mixture.

For data q(x_0) = sum_k w_k N(mu_k, S_k), the exact p(x_0 | x_t) is a mixture whose component masses p(k | x_t)
the oracle gives in closed form; since k and x_t are independent given x_0, p(k | x_t) = E[p(k | x_0) | x_t], so the
average of p(k | x_0) over the samples estimates the masses without a nearest-component rule. The oracle's exact
denoiser stands in for the network, so what remains is the discretisation of the reverse chain and the Monte Carlo
error of 2000 samples (standard error about 0.01). Measured with this file's code (torch 2.13 CPU): with T = 200
the largest mass error at t = 40, 100, 160, 200 is 0.002 .. 0.016 (seed 0) and 0.002 .. 0.019 (seed 1); with
T = 50 the chain is too coarse and overweights one component by 0.03 at t = 25 and 40 for both seeds, so the test
uses T = 200 and the tolerance 0.03. As t -> T the samples forget the image: at t = T the masses are the prior
weights and the sample mean is the data mean (within 0.03). Starting the chain at T whatever t is (tested) fails.
"""

import importlib

import numpy as np
import pytest
import torch

from ddpmkit import Diffusion, oracle
from ddpmkit.edit import reconstruct
from ddpmkit.pipeline import Pipeline

rec_module = importlib.import_module("ddpmkit.edit.reconstruct")
T, N = 200, 2000
MEANS = torch.tensor([[0.4, 0.4, -0.3, 0.2], [-0.4, -0.2, 0.3, -0.3], [0.2, -0.5, 0.4, 0.5]], dtype=torch.float64)
STDS = torch.tensor([0.15, 0.2, 0.12], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
IMAGE = np.array([[[[128], [140]], [[135], [150]]]], dtype=np.uint8)  # (1, 2, 2, 1): between the components
TS = [40, 100, 160, T]
TOL = 0.03


def pipeline():
    d = Diffusion.from_name("linear", T, beta_start=0.1 / T, beta_end=20.0 / T)
    covs = torch.diag_embed(STDS[:, None].expand(3, 4) ** 2)
    model = oracle.gaussian_mixture_full(d, MEANS, covs, WEIGHTS)
    return Pipeline(model, d, None, 2, 1, 0, None)


def mass_errors(pipe) -> list[float]:
    rec = reconstruct(pipe, IMAGE, TS, N, seed=0)
    model, ab = pipe.model, pipe.diffusion.alpha_bar.double()
    errors = []
    for j, t in enumerate(rec.t):
        exact = model.responsibilities(torch.from_numpy(rec.xt[:, j]), ab[t - 1])[0]  # p(k | x_t)
        estimate = model.responsibilities(torch.from_numpy(rec.samples[0, j]).double()).mean(0)  # E[p(k | x_0)]
        errors.append(float((estimate - exact).abs().max()))
    print("largest mass error at t =", TS, [round(e, 4) for e in errors])
    return errors, rec


def test_samples_reproduce_the_exact_posterior_masses_at_several_t():
    errors, rec = mass_errors(pipeline())
    assert max(errors) <= TOL
    assert rec.samples.shape == (1, len(TS), N, 1, 2, 2) and rec.xt.shape == (1, len(TS), 1, 2, 2)
    # t = T: the data distribution, whatever the image
    last = torch.from_numpy(rec.samples[0, -1]).double().reshape(N, 4)
    assert (pipeline().model.responsibilities(last).mean(0) - WEIGHTS).abs().max() <= TOL
    assert (last.mean(0) - WEIGHTS @ MEANS).abs().max() <= TOL
    # small t: the samples remember the image (their masses are far from the prior), and the draws differ
    first = torch.from_numpy(rec.samples[0, 0]).double().reshape(N, 4)
    assert (pipeline().model.responsibilities(first).mean(0) - WEIGHTS).abs().max() > 0.2
    assert first.std(0).min() > 0


def test_the_check_fails_when_the_chain_ignores_t(monkeypatch):
    monkeypatch.setattr(rec_module, "head", lambda d, t: d)  # the whole chain from T, whatever t
    errors, _ = mass_errors(pipeline())
    assert max(errors[:1]) > TOL, errors


def test_t_out_of_range_is_refused():
    from ddpmkit.errors import ConfigError

    for bad in (0, T + 1):
        with pytest.raises(ConfigError, match=f"--t {bad}"):
            reconstruct(pipeline(), IMAGE, [bad], 1)
