"""Sampling: one loop (loop.py), one step signature (state.py), the spacings of the nodes (spacing.py), and the
samplers, one module per family: ancestral.py (Algorithm 2, DDIM), dpm_solver.py (DPM-Solver++ 2M, 3M, 2M SDE),
heun.py (Karras' Heun). Samplers depend on the diffusion math, never the other way round: `Diffusion.sample`
reaches the loop through the hook that this package registers on import.

    SAMPLERS["dpm++2m"].nfe(20)   # network evaluations of a 20-step run
"""

from .. import diffusion as _diffusion
from .loop import DETERMINISTIC, SAMPLERS, Sampler, SamplingStopped, check_sampler, model_device, run_sampler
from .spacing import SPACINGS, timestep_nodes
from .state import SamplerState

_diffusion.register_sampling_loop(run_sampler)

__all__ = ["DETERMINISTIC", "SAMPLERS", "SPACINGS", "Sampler", "SamplerState", "SamplingStopped", "check_sampler",
           "model_device", "run_sampler", "timestep_nodes"]
