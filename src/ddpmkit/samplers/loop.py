"""The one sampling loop: every sampler is a step function run by `run_sampler` on K integer nodes.

References:
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 4: sampling on a subsequence of t, betas recomputed.

With K nodes the loop runs on `diffusion.respaced(nodes)`, whose index i stands for the original timestep
`timestep_map[i]`; the model is always called with the original timestep. Each step maps x at node i to x at node
i - 1; the step at node 0 returns x_0. A `stop` callable, asked before every step, ends a run early with
`SamplingStopped` (the trainer uses it so that SIGINT/SIGTERM during a sample grid is honoured at once).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm

from ..diffusion import Diffusion
from ..errors import ConfigError
from .ancestral import ancestral_step, ddim_step
from .dpm_solver import dpmpp_2m_sde_step, dpmpp_2m_step, dpmpp_3m_step
from .heun import heun_step
from .spacing import SPACINGS, timestep_nodes
from .state import SamplerState, noise_like


class SamplingStopped(Exception):
    """Raised by run_sampler when its `stop` callable says so; nothing of the run is returned."""


@dataclass(frozen=True)
class Sampler:
    """A step function and what the loop and the CLI need to know about it."""

    step: Callable
    stochastic: bool  # draws noise at every step (with a generator: reproducible)
    order: int  # of convergence in the step size; also the fewest steps it accepts
    evals_per_step: int = 1  # network evaluations per step but the last (which is one)
    uses_eta: bool = False
    default_spacing: str = "uniform"  # where no spacing is given (measured: see docs/RESULTS.md, samplers)

    def nfe(self, steps: int) -> int:
        """Network evaluations for `steps` nodes."""
        return self.evals_per_step * (steps - 1) + 1


SAMPLERS: dict[str, Sampler] = {
    "ancestral": Sampler(ancestral_step, stochastic=True, order=1),
    "ddim": Sampler(ddim_step, stochastic=False, order=1, uses_eta=True),  # stochastic only with eta > 0
    "dpm++2m": Sampler(dpmpp_2m_step, stochastic=False, order=2, default_spacing="logsnr"),
    "dpm++3m": Sampler(dpmpp_3m_step, stochastic=False, order=3, default_spacing="logsnr"),
    "dpm++2m-sde": Sampler(dpmpp_2m_sde_step, stochastic=True, order=2, default_spacing="logsnr"),
    "heun": Sampler(heun_step, stochastic=False, order=2, evals_per_step=2, default_spacing="karras"),
}
DETERMINISTIC = tuple(name for name, s in SAMPLERS.items() if not s.stochastic)


def check_sampler(name: str, steps: int | None, num_timesteps: int, *, eta: float | None = None,
                  spacing: str | None = None, option: str = "sampler") -> Sampler:
    """The Sampler for `name`, or ConfigError (one line) for an unknown name or spacing, steps outside 1..T,
    fewer steps than the solver's order, or an eta for a sampler that has none."""
    if name not in SAMPLERS:
        raise ConfigError(f"{option} {name!r} is not one of {list(SAMPLERS)}")
    if spacing is not None and spacing not in SPACINGS:
        raise ConfigError(f"spacing {spacing!r} is not one of {list(SPACINGS)}")
    spec, k = SAMPLERS[name], num_timesteps if steps is None else steps
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_timesteps:
        raise ConfigError(f"sampling steps must be between 1 and T = {num_timesteps}, got {steps}")
    if k < spec.order:
        raise ConfigError(f"{option} {name!r} is of order {spec.order} and needs at least {spec.order} steps, "
                          f"got {k}: raise the steps or use ddim for a single step")
    if eta is not None and eta != 0 and not spec.uses_eta:
        raise ConfigError(f"eta = {eta} is for the ddim sampler only; {name!r} has no eta: leave it out")
    if eta is not None and not (eta >= 0):
        raise ConfigError(f"eta must be >= 0, got {eta}")
    return spec


@torch.no_grad()
def run_sampler(diffusion: Diffusion, model, shape, *, sampler: str = "ancestral", steps: int | None = None,
                eta: float | None = None, spacing: str | None = None, generator=None, progress: bool = False,
                return_trajectory: bool = False, clip_denoised: bool = True, device=None, x_T=None,
                stop: Callable[[], bool] | None = None):
    """Run `sampler` from x_T ~ N(0, I) down to x_0 on `steps` nodes (all T by default) placed by `spacing`
    (default: the sampler's own, `SAMPLERS[sampler].default_spacing`)."""
    total = diffusion.num_timesteps
    spec = check_sampler(sampler, steps, total, eta=eta, spacing=spacing)
    k = total if steps is None else int(steps)
    spacing = spacing or spec.default_spacing
    nodes = timestep_nodes(diffusion.alpha_bar.cpu().double().numpy(), k, spacing)
    d = diffusion if len(nodes) == total else diffusion.respaced(nodes)
    device = torch.device(device) if device is not None else model_device(model)
    x = x_T.to(device) if x_T is not None else noise_like(torch.empty(tuple(shape), device=device), generator)
    state = SamplerState(num_steps=k, eta=float(eta or 0.0), generator=generator, clip_denoised=clip_denoised)
    traj_t, traj_x, traj_x0 = [], [x.cpu()] if return_trajectory else [], []
    desc = f"sampling ({sampler}, {spec.nfe(k)} NFE)"
    for i in tqdm(range(d.num_timesteps - 1, -1, -1), disable=not progress, desc=desc):
        if stop is not None and stop():
            raise SamplingStopped(f"stopped before node {i}")
        state.index = i
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=device)
        x, x0_pred = spec.step(d, model, x, t, state)
        if return_trajectory:
            traj_t.append(int(d.timestep_map[i]))
            traj_x.append(x.cpu())
            traj_x0.append(x0_pred.cpu())
    x = x.clamp(-1.0, 1.0)
    if not return_trajectory:
        return x
    return x, {"t": traj_t, "xt": torch.stack(traj_x), "x0_pred": torch.stack(traj_x0)}


def model_device(model) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in list(getattr(model, "parameters", lambda: [])()) + list(getattr(model, "buffers", lambda: [])()):
        return tensor.device
    return torch.device("cpu")
