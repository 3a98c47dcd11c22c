"""Improved precision and recall of a generative model from feature vectors, with k-nearest-neighbour balls.

Each real feature vector gets a ball whose radius is the distance to its k-th nearest other real vector; the union
of those balls estimates the support of the real distribution [PR Eqs. 1-2]. Precision is the fraction of generated
vectors inside that support (are the samples realistic?); recall swaps the roles: the fraction of real vectors
inside the support of the generated ones (is the real variety covered?). [PR] uses k = 3.

Distances are computed in row batches, so memory stays at about batch_size x max(N, M) numbers: 10k x 10k
vectors need no N x M matrix. Both numbers depend on the feature space (Inception, a small classifier, ...):
they are comparable only between runs that used the same extractor.

References:
    [PR] Kynkaanniemi, Karras, Laine, Lehtinen & Aila 2019, "Improved precision and recall metric for assessing
         generative models", arXiv 1904.06991 (Sec. 2, Eqs. 1-2; k = 3).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """||a_i - b_j||^2 (A, B) by the expansion |a|^2 + |b|^2 - 2 a.b, clamped at 0 (float64 keeps it accurate)."""
    d2 = (a * a).sum(1, keepdim=True) + b_sq[None, :] - 2.0 * (a @ b.T)
    return d2.clamp_min_(0.0)


def knn_radii(x: np.ndarray | torch.Tensor, k: int = 3, batch_size: int = 1024) -> torch.Tensor:
    """Distance (N,) from each row of x to its k-th nearest other row [PR Eq. 1]; the row itself does not count.

    Taking the (k+1)-th smallest distance of each row, whose smallest is its own 0, excludes the point itself;
    an exact duplicate of a point therefore counts as a neighbour at distance 0, as it should.
    """
    x = torch.as_tensor(x, dtype=torch.float64)
    x_sq = (x * x).sum(1)
    radii = []
    for start in range(0, len(x), batch_size):
        d2 = _squared_distances(x[start:start + batch_size], x, x_sq)  # (B, N)
        radii.append(d2.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii).sqrt()


def coverage(points: np.ndarray | torch.Tensor, centres: np.ndarray | torch.Tensor, radii: torch.Tensor,
             batch_size: int = 1024) -> float:
    """Fraction of `points` inside at least one ball (centre, radius) [PR Eq. 2]; a point on a sphere counts."""
    points = torch.as_tensor(points, dtype=torch.float64)
    centres = torch.as_tensor(centres, dtype=torch.float64)
    c_sq, r_sq = (centres * centres).sum(1), radii.to(torch.float64) ** 2
    inside = 0
    for start in range(0, len(points), batch_size):
        p = points[start:start + batch_size]
        d2 = _squared_distances(p, centres, c_sq)  # (B, N)
        # The expansion's rounding error grows with |p|^2 + |c|^2; allowing for it keeps a generated copy of a real
        # point inside that point's ball even when the radius is 0 (k exact duplicates).
        slack = 1e-12 * ((p * p).sum(1, keepdim=True) + c_sq[None, :])
        inside += int((d2 <= r_sq[None, :] + slack).any(dim=1).sum())
    return inside / len(points)


def _check(real: np.ndarray, fake: np.ndarray, k: int) -> None:
    for name, x in (("real", real), ("fake", fake)):
        if np.ndim(x) != 2:
            raise UserError(f"precision_recall: {name} features must be (N, D), got shape {np.shape(x)}")
        if len(x) < k + 1:
            raise UserError(f"precision_recall: {len(x)} {name} vectors, need at least k + 1 = {k + 1}: "
                            "use more images")
        if not np.isfinite(x).all():
            raise UserError(f"precision_recall: the {name} features hold NaN or inf (diverged samples?)")
    if real.shape[1] != fake.shape[1]:
        raise UserError(f"precision_recall: real features are {real.shape[1]}-d, fake {fake.shape[1]}-d: "
                        "extract both with the same feature extractor")
    if k < 1:
        raise UserError(f"precision_recall: k={k}, must be at least 1 (the paper uses 3)")


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, batch_size: int = 1024) -> dict:
    """Improved precision and recall [PR Sec. 2] of fake features (M, D) against real features (N, D).

    precision: the fraction of fake vectors within the k-NN ball of some real vector;
    recall: the fraction of real vectors within the k-NN ball of some fake vector. Both in [0, 1].
    Memory: about batch_size x max(N, M) float64 numbers at a time.
    """
    real, fake = np.asarray(real), np.asarray(fake)
    _check(real, fake, k)
    real_t = torch.as_tensor(real, dtype=torch.float64)
    fake_t = torch.as_tensor(fake, dtype=torch.float64)
    precision = coverage(fake_t, real_t, knn_radii(real_t, k, batch_size), batch_size)
    recall = coverage(real_t, fake_t, knn_radii(fake_t, k, batch_size), batch_size)
    return {"precision": precision, "recall": recall, "k": k, "num_real": len(real), "num_fake": len(fake)}
