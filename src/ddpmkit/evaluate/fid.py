"""Fréchet Inception Distance and Inception Score from feature and logit arrays, and a cache of reference statistics.

Both metrics take arrays, not images: `inception.py` (or a classifier trained on the data set) turns images into
`features` (N, D) and `logits` (N, K). FID compares two Gaussians fitted to features; IS looks at the class
posteriors of the samples alone. Everything here is float64 numpy: the statistics of 50k x 2048 features lose
digits in float32, and FID is a small difference of large traces.

The statistics of the real data are the same for every run, so `cached_stats` keeps them on disk under a key that
the caller makes from everything they depend on (data set, split, image count, extractor name and weights hash).

References:
  [FID] Heusel, Ramsauer, Unterthiner, Nessler & Hochreiter 2017, "GANs Trained by a Two Time-Scale Update Rule
        Converge to a Local Nash Equilibrium" (arXiv 1706.08500), Sec. "Fréchet Inception Distance"; the distance
        between Gaussians is Dowson & Landau 1982
  [IS]  Salimans, Goodfellow, Zaremba, Cheung, Radford & Chen 2016, "Improved Techniques for Training GANs"
        (arXiv 1606.03498), Sec. 4; 10 splits as in their released code
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ddpmkit.errors import ConfigError, DataError
from ddpmkit.fileio import atomic_path, default_cache_dir  # default_cache_dir: shared with data/cache.py


def _float64(x: np.ndarray, name: str, ndim: int) -> np.ndarray:
    """`x` as a finite float64 array of `ndim` dimensions, or DataError naming `name`."""
    x = np.asarray(x)
    if x.ndim != ndim or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise DataError(f"{name}: expected a {ndim}-D numeric array, got {x.dtype} of shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        raise DataError(f"{name}: contains NaN or inf (did the model or the feature extractor diverge?)")
    return x


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of features (N, D), in float64 [FID]."""
    x = _float64(features, "features", 2)
    if len(x) < 2:
        raise DataError(f"features: {len(x)} vector(s), a covariance needs at least 2 (use more images)")
    mu = x.mean(axis=0)
    xc = x - mu  # (N, D)
    sigma = xc.T @ xc / (len(x) - 1)
    # the product is symmetric in exact arithmetic; make it so in floating point too, for eigh downstream
    return mu, (sigma + sigma.T) / 2


def _without_rounding(eigval: np.ndarray) -> np.ndarray:
    """Eigenvalues of a PSD matrix with those at rounding level (|x| <= D * eps * max) set to 0.

    Negative ones are rounding, not signal; so are the tiny positive ones a singular covariance (N < D) gets in its
    null space, and the square root would blow them up: 1e-16 becomes 1e-8, and D of them bias Tr(.^(1/2)).
    """
    floor = len(eigval) * np.finfo(np.float64).eps * float(np.abs(eigval).max(initial=0.0))
    return np.where(eigval > floor, eigval, 0.0)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    """The symmetric PSD square root of a covariance, from its eigendecomposition."""
    eigval, eigvec = np.linalg.eigh(sigma)
    return (eigvec * np.sqrt(_without_rounding(eigval))) @ eigvec.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((S1 S2)^(1/2)) for PSD S1, S2, via the eigenvalues of the symmetric S1^(1/2) S2 S1^(1/2).

    S1 S2 = S1^(1/2) (S1^(1/2) S2) has the same eigenvalues as (S1^(1/2) S2) S1^(1/2), which is symmetric PSD: they
    are real and >= 0, and Tr((S1 S2)^(1/2)) is the sum of their square roots. scipy.linalg.sqrtm of the
    non-symmetric product S1 S2 instead goes through a Schur form that, when the covariances are singular (fewer
    images than dimensions, N < D), returns complex parts or inf and needs an "add eps to the diagonal" retry; the
    symmetric form needs neither, and eigh is backward stable.
    """
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    eigval = np.linalg.eigvalsh((m + m.T) / 2)  # symmetric in exact arithmetic
    return float(np.sqrt(_without_rounding(eigval)).sum())


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, which: str) -> tuple[np.ndarray, np.ndarray]:
    mu, sigma = _float64(mu, f"mu{which}", 1), _float64(sigma, f"sigma{which}", 2)
    if sigma.shape != (len(mu), len(mu)):
        raise DataError(f"sigma{which}: shape {sigma.shape} does not fit mu{which} of shape {mu.shape}")
    return mu, sigma


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FID: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between N(mu1, S1) and N(mu2, S2) [FID]."""
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise DataError(f"mu1 has {len(mu1)} dimensions, mu2 {len(mu2)}: statistics from different feature spaces")
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2)
    # the distance is >= 0 in exact arithmetic; for (near-)identical sets rounding can leave a tiny negative
    return float(max(distance, 0.0))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """log sum exp along `axis`, shifted by the max so exp never overflows."""
    top = x.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(x - top).sum(axis=axis))


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p(y|x) from logits (N, K)."""
    return logits - _logsumexp(logits, axis=1)[:, None]


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """IS: exp(E_x KL(p(y|x) || p(y))) in each of `splits` parts of the samples; (mean, std) over parts [IS Sec. 4]."""
    if isinstance(splits, bool) or not isinstance(splits, int) or splits < 1:
        raise ConfigError(f"inception_score: splits must be an int >= 1, got {splits!r}")
    log_p = _log_softmax(_float64(logits, "logits", 2))  # log p(y|x), (N, K)
    n = len(log_p)
    if n < splits:
        raise DataError(f"logits: {n} samples for {splits} IS splits; use at least {splits} samples or fewer splits")
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits : (i + 1) * n // splits]  # the same cut as the reference code
        # 1. log p(y) = log mean_x p(y|x) over this part
        log_py = _logsumexp(part, axis=0) - np.log(len(part))  # (K,)
        # 2. KL(p(y|x) || p(y)) per sample; exp(log_p) = 0 where the class is impossible, so no 0 * log 0
        kl = (np.exp(part) * (part - log_py)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def stats_cache_path(key: str, cache_dir: Path | str | None = None) -> Path:
    """Where `cached_stats` keeps the statistics for `key`: a file named by the key's SHA-256."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"fid-stats-{digest}.npz"


def _read_stats(path: Path, key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(mu, sigma) stored under `key` in `path`; None (with a warning) if the file is corrupt or for another key."""
    problem = None
    try:
        stored = np.load(path, allow_pickle=False)
        if isinstance(stored, np.lib.npyio.NpzFile):
            with stored:
                stored_key, mu, sigma = str(stored["key"]), stored["mu"], stored["sigma"]
        else:
            problem = "a single .npy array, not an .npz"
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        problem = f"{type(err).__name__}: {err}"  # what truncation, garbage or a foreign file raise
    if problem is None and not (
        stored_key == key
        and mu.dtype == np.float64 and mu.ndim == 1
        and sigma.dtype == np.float64 and sigma.shape == (len(mu), len(mu))
        and bool(np.isfinite(mu).all() and np.isfinite(sigma).all())
    ):  # fmt: skip
        problem = "another key, or malformed arrays"
    if problem is not None:
        warnings.warn(f"{path}: corrupt statistics cache ({problem}); recomputing it", stacklevel=3)
        return None
    return mu, sigma


def _write_stats(path: Path, key: str, mu: np.ndarray, sigma: np.ndarray) -> None:
    """Write atomically (temp file + os.replace), so a crash or a parallel run never leaves a half-written cache."""
    try:
        with atomic_path(path, fsync=True) as tmp:
            np.savez(tmp, key=np.array(key), mu=mu, sigma=sigma)  # key is a str array: loads without pickle
    except OSError as err:
        reason = err.strerror or str(err)
        raise ConfigError(
            f"cannot write the FID statistics cache {path} ({reason}): set DDPMKIT_CACHE to a writable folder"
        ) from err


def cached_stats(
    key: str, compute: Callable[[], np.ndarray], cache_dir: Path | str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`feature_stats(compute())`, kept in `cache_dir` (default $DDPMKIT_CACHE or ~/.cache/ddpmkit) under `key`.

    The key must name everything the statistics depend on (data set, split, image count, extractor name and weights
    hash): a file is reused whenever its key matches. A corrupt file is recomputed and overwritten, never trusted.
    """
    if not isinstance(key, str) or not key:
        raise TypeError(f"cached_stats: key must be a non-empty str, got {key!r}")
    path = stats_cache_path(key, cache_dir)
    if path.is_file():
        cached = _read_stats(path, key)
        if cached is not None:
            return cached
    mu, sigma = feature_stats(compute())
    _write_stats(path, key, mu, sigma)
    return mu, sigma
