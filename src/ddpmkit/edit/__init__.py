"""Editing images with a trained model; functions that take a pipeline and images and return arrays.

    reconstruct  x_t of an image and samples of p(x_0 | x_t) [DDPM Sec. 4.3, Fig. 7; SDEdit]  -> Reconstruction
    inpaint      fill in the masked pixels, RePaint's resampling [Lugmayr et al. 2022]        -> (N, n, C, H, W)
    encode       x_0 -> x_T along the probability-flow ODE (DDIM inversion)                  -> (N, C, H, W)
    decode       x_T -> x_0 with the same deterministic solver                               -> (N, C, H, W)
The tensor-level cores (sample_from_t, repaint, ode_encode) take (diffusion, model, x) and work with any model,
the exact oracles of ddpmkit.oracle included. The `ddpm reconstruct|inpaint|encode` commands draw them.
A conditional run: pass `pipe.guided(class, guidance)`, whose model carries the label [CFG Eq. 6].
"""

from .encode import ENCODERS, decode, encode, ode_encode, round_trip_error
from .inpaint import MASKS, inpaint, named_mask, repaint, repaint_levels
from .reconstruct import Reconstruction, default_t, reconstruct, sample_from_t

__all__ = ["ENCODERS", "MASKS", "Reconstruction", "decode", "default_t", "encode", "inpaint", "named_mask",
           "ode_encode", "reconstruct", "repaint", "repaint_levels", "round_trip_error", "sample_from_t"]
