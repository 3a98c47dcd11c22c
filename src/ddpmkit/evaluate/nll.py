"""Negative log-likelihood in bits/dim: the full variational bound on real images, every term, no estimate.

References:
    [DDPM] Ho, Jain & Abbeel 2020, arXiv 2006.11239: Eq. 5 (the bound), Eq. 13 (the decoder), Table 2 (NLL),
           Sec. 4.3 and Fig. 5 (rate-distortion from the same per-t terms).

NLL <= L_T + sum_{t>1} L_{t-1} + L_0 on uint8 images scaled to [-1, 1], whose 256 values are exactly the
centres of the decoder's bins. All T terms are computed (one network evaluation per t per image); each term
uses its own draw of x_t ~ q(x_t | x_0), as the paper's evaluation does.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data import to_model_range
from ..diffusion import Diffusion
from ..noise import RULE, ImageNoise


@torch.no_grad()
def bits_per_dim(diffusion: Diffusion, model, images: np.ndarray, *, batch_size: int = 256,
                 clip_denoised: bool = True, seed: int = 0, progress: bool = False,
                 device: torch.device | str = "cpu") -> dict:
    """The bound of [DDPM Eq. 5] in bits/dim for uint8 images (N, H, W, C), with its breakdown.

    Returns nll_bpd (the mean total), nll_bpd_sem (its standard error over images), prior_bpd (L_T),
    decoder_bpd (L_0), diffusion_bpd_by_quarter (the terms L_1..L_{T-1} summed over four equal ranges of t, from
    small t to large), terms_bpd (T,) and x0_mse (T,) averaged over images (index t = paper's t + 1), and
    per_image_bpd (N,). Image i's noise depends only on (seed, i) (ddpmkit.noise), so the result does not depend on
    the batch size, and equals `ddpm eval --metrics nll` split over any number of processes (bound_job).
    """
    totals, priors, terms, mses = [], [], [], []
    for start in tqdm(range(0, len(images), batch_size), disable=not progress, desc="nll batches"):
        x0 = to_model_range(torch.from_numpy(images[start:start + batch_size])).to(device)  # (B, C, H, W)
        generator = ImageNoise(seed, range(start, start + len(x0)))
        out = diffusion.vlb_terms(model, x0, clip_denoised=clip_denoised, progress=progress, generator=generator)
        totals.append(out["total_bpd"].cpu())
        priors.append(out["prior_bpd"].cpu())
        terms.append(out["terms_bpd"].cpu())
        mses.append(out["x0_mse"].cpu())
    rows = {"total_bpd": torch.cat(totals).numpy(), "prior_bpd": torch.cat(priors).numpy(),
            "terms_bpd": torch.cat(terms).numpy(), "x0_mse": torch.cat(mses).numpy()}
    return summarize_bound(rows, diffusion.num_timesteps)


def summarize_bound(rows: dict, num_timesteps: int) -> dict:
    """bits_per_dim's summary from the per-image rows total_bpd (N,), prior_bpd (N,), terms_bpd and x0_mse (N, T)."""
    total, prior = rows["total_bpd"], rows["prior_bpd"]
    mean_terms = rows["terms_bpd"].mean(0)
    quarters = np.array_split(np.arange(1, num_timesteps), 4)
    return {
        "nll_bpd": float(total.mean()),
        "nll_bpd_sem": float(total.std(ddof=1) / np.sqrt(len(total))) if len(total) > 1 else float("nan"),
        "prior_bpd": float(prior.mean()),
        "decoder_bpd": float(mean_terms[0]),
        "diffusion_bpd_by_quarter": [float(mean_terms[q].sum()) for q in quarters],
        "terms_bpd": mean_terms,
        "x0_mse": rows["x0_mse"].mean(0),
        "per_image_bpd": total,
    }


def bound_job(pipe, images: np.ndarray, *, labels: np.ndarray | None = None, seed: int = 0, batch_size: int = 256,
              root=None, progress: bool = False, identity: dict | None = None):
    """The bound of every image as a ddpmkit.jobs.Job, split over processes and resumable: rows total_bpd,
    prior_bpd, terms_bpd, x0_mse of image i, whose noise at each t depends only on (seed, i). With labels (a
    conditional run), image i's bound is given its label, unguided."""
    import hashlib

    from ..jobs import Job, model_identity

    device = next(iter(pipe.model.parameters())).device

    def work(index: np.ndarray) -> dict:
        x0 = to_model_range(torch.from_numpy(images[index])).to(device)  # (B, C, H, W)
        # the network under the pipeline's precision: bf16 moves the bound by < 0.1% (docs/PERFORMANCE.md)
        model = pipe.network if labels is None else pipe.guided(labels[index], 0.0).network
        out = pipe.diffusion.vlb_terms(model, x0, generator=ImageNoise(seed, index))
        return {k: out[k].cpu().numpy() for k in ("total_bpd", "prior_bpd", "terms_bpd", "x0_mse")}

    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    if labels is not None:
        digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    ident = {**model_identity(pipe), "seed": seed, "noise": RULE, "clip_denoised": True,
             "images_sha256": digest.hexdigest(), **(identity or {})}
    return Job("bound", len(images), ident, work, batch_size=batch_size, root=root, progress=progress)


def save_terms(result: dict, path) -> None:
    """The per-t terms and x0 errors as an .npz, for the rate-distortion figure [DDPM Fig. 5]."""
    np.savez(path, terms_bpd=result["terms_bpd"], x0_mse=result["x0_mse"], prior_bpd=result["prior_bpd"],
             per_image_bpd=result["per_image_bpd"])
