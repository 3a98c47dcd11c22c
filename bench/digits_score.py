"""Score 8x8 digit samples with a small classifier trained here, in seconds, with no download.

    python bench/digits_score.py samples.npz [more.npz ...]    # npz key arr_0: uint8 (N, 8, 8, 1) or (N, 8, 8)

The classifier is scikit-learn's MLPClassifier (64 -> 128 -> 64 -> 10, ReLU, seed 0) trained on the first 1500 of
the 1797 built-in digits (ddpmkit's "train" split) scaled to [-1, 1] (ddpmkit's `to_model_range`); its accuracy on
the other 297 (the "test" split) is printed as a sanity check. The real reference sets are drawn from all 1797.
Per sample set:

  fd          Frechet distance [FID, Heusel et al. 2017, Eq. 6] between Gaussians fitted to the 64 penultimate-layer
              features of the samples and of n_ref real digits. It lives in THIS classifier's feature space: it is
              comparable only with other numbers from this script, never with an Inception FID. The estimate is
              biased upwards for small N, so compare sets of the same size.
  fd_floor    the same distance from the reference set to other real digits (n_ref of them, disjoint from it),
              averaged over 5 such sets; the table also shows their spread (+-sd). It is what a perfect sampler
              of the training data would get at this N, and the spread says how large a difference is noise.
  confidence  mean max-softmax probability ("recognisable"); conf>=0.9 is the share of samples above 0.9.
  classes     how many of the 10 classes are the argmax of at least one sample; entropy is that class histogram's
              entropy in bits (log2 10 = 3.32 for a uniform mix).

n_ref = min(N, 898) (two disjoint sets must fit in the 1797 images); all real sets are drawn with seed 0.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

from ddpmkit.data import load_dataset, to_model_range

NUM_TRAIN = 1500  # the rest (297 images) checks the classifier's accuracy
HIDDEN = (128, 64)  # the last hidden layer is the feature space of the Frechet distance
FLOOR_DRAWS = 5  # real sets compared with the reference set for the floor's mean and spread
FD_NOTE = ("fd is a Frechet distance in this script's digit classifier's feature space (64-d penultimate layer): "
           "comparable only with itself, at equal N; not an Inception FID.")


def _to_features_input(images_uint8: np.ndarray) -> np.ndarray:
    """uint8 (N, 8, 8, 1) -> float64 (N, 64) in [-1, 1], the classifier's input."""
    x = to_model_range(torch.from_numpy(np.ascontiguousarray(images_uint8)))  # (N, 1, 8, 8)
    return x.reshape(len(images_uint8), -1).double().numpy()


@functools.lru_cache(maxsize=1)
def _classifier():
    """(MLPClassifier, held-out accuracy, real images, real labels); trained once per process, seed 0."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    data = load_dataset("digits", split="all")  # all 1797, in sklearn's order; split here, not by the loader
    x = _to_features_input(data.images)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, alpha=1e-3, max_iter=300, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 300 epochs of full-data Adam are plenty here
        clf.fit(x[:NUM_TRAIN], data.labels[:NUM_TRAIN])
    accuracy = float((clf.predict(x[NUM_TRAIN:]) == data.labels[NUM_TRAIN:]).mean())
    return clf, accuracy, data.images, data.labels


def features(images_uint8: np.ndarray) -> np.ndarray:
    """The last hidden layer's activations (N, 64) for uint8 (N, 8, 8, 1) images."""
    clf = _classifier()[0]
    h = _to_features_input(images_uint8)
    for w, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0.0)  # MLPClassifier's default activation is ReLU
    return h


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) [FID Eq. 6], stable for singular covariances.

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric PSD matrix
    S_a^(1/2) S_b S_a^(1/2), which has the same eigenvalues as S_a S_b: no complex parts from a non-symmetric
    sqrtm, and eigenvalues that rounding pushes below zero are clipped to 0. A 1e-6 * I ridge keeps S_a^(1/2)
    well defined when N is smaller than the feature dimension.
    """
    mu_a, mu_b = feat_a.mean(0), feat_b.mean(0)
    ridge = 1e-6 * np.eye(feat_a.shape[1])
    cov_a = np.cov(feat_a, rowvar=False) + ridge
    cov_b = np.cov(feat_b, rowvar=False) + ridge
    w, v = scipy.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T  # (D, D) symmetric root of cov_a
    eig = scipy.linalg.eigh(sqrt_a @ cov_b @ sqrt_a, eigvals_only=True)
    tr_covmean = np.sqrt(np.clip(eig, 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)


def _class_stats(images_uint8: np.ndarray) -> dict:
    """Mean max-softmax, share above 0.9, classes present and class-histogram entropy (bits)."""
    prob = _classifier()[0].predict_proba(_to_features_input(images_uint8))  # (N, 10)
    top = prob.max(1)
    hist = np.bincount(prob.argmax(1), minlength=10) / len(prob)
    nz = hist[hist > 0]
    return {"confidence": float(top.mean()), "confident_share": float((top >= 0.9).mean()),
            "classes": int((hist > 0).sum()), "entropy_bits": float(max(0.0, -(nz * np.log2(nz)).sum())),
            "class_hist": hist.round(4).tolist()}


def _reference_sets(n: int, draws: int = FLOOR_DRAWS) -> tuple[np.ndarray, list[np.ndarray]]:
    """The reference set of min(n, 898) real digits and `draws` other sets of that size disjoint from it (seed 0)."""
    real = _classifier()[2]
    n_ref = min(n, len(real) // 2)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(real))
    rest = perm[n_ref:]
    others = [real[rng.choice(rest, n_ref, replace=False)] for _ in range(draws)]
    return real[perm[:n_ref]], others


def check_samples(samples: np.ndarray, source: str = "samples") -> np.ndarray:
    """uint8 (N, 8, 8, 1) from (N, 8, 8, 1) or (N, 8, 8); ValueError naming what is wrong otherwise."""
    if samples.ndim == 3:
        samples = samples[..., None]
    if samples.dtype != np.uint8 or samples.ndim != 4 or samples.shape[1:] != (8, 8, 1):
        raise ValueError(f"{source}: need uint8 (N, 8, 8, 1) or (N, 8, 8) digit images, got {samples.dtype} "
                         f"{samples.shape}; save them with np.savez(path, uint8_array)")
    if len(samples) < 2:
        raise ValueError(f"{source}: need at least 2 samples for a covariance, got {len(samples)}")
    return samples


def score(samples_uint8: np.ndarray) -> dict:
    """All numbers for uint8 (N, 8, 8, 1) samples: fd, fd_floor, n_ref, confidence, classes, entropy, ...

    The real-vs-real floor (mean and spread over FLOOR_DRAWS real sets) and the real data's own confidence and
    entropy are included for reference (keys fd_floor, fd_floor_sd, real_confidence, real_classes,
    real_entropy_bits), as is the classifier's held-out accuracy (classifier_accuracy).
    """
    samples = check_samples(np.asarray(samples_uint8))
    ref, others = _reference_sets(len(samples))
    feat_ref = features(ref)
    floors = [frechet_distance(features(other), feat_ref) for other in others]
    out = {"n": len(samples), "n_ref": len(ref), "fd": frechet_distance(features(samples), feat_ref),
           "fd_floor": float(np.mean(floors)), "fd_floor_sd": float(np.std(floors)), **_class_stats(samples)}
    real = _class_stats(others[0])
    out.update(real_confidence=real["confidence"], real_classes=real["classes"],
               real_entropy_bits=real["entropy_bits"], classifier_accuracy=_classifier()[1])
    return out


def format_table(rows: list[tuple[str, dict]]) -> str:
    """A fixed-width table of named score dicts, the real-data reference rows and the notes under it."""
    head = f"{'samples':<32} {'N':>5} {'n_ref':>5} {'fd':>8} {'fd_floor (+-sd)':>15} {'conf':>6} {'conf>=0.9':>9} " \
           f"{'classes':>7} {'entropy':>7}"
    lines = [head, "-" * len(head)]
    for name, s in rows:
        lines.append(f"{name[-32:]:<32} {s['n']:>5} {s['n_ref']:>5} {s['fd']:>8.3f} {s['fd_floor']:>7.3f} +-{s['fd_floor_sd']:>5.3f} "
                     f"{s['confidence']:>6.3f} {s['confident_share']:>9.3f} {s['classes']:>5}/10 "
                     f"{s['entropy_bits']:>7.3f}")
    s = rows[0][1]
    lines += ["",
              f"real digits (a floor set, N={s['n_ref']}): conf {s['real_confidence']:.3f}, "
              f"classes {s['real_classes']}/10, entropy {s['real_entropy_bits']:.3f} bits (max 3.322)",
              f"classifier: MLP {HIDDEN}, held-out accuracy {s['classifier_accuracy']:.3f} on the last "
              f"{1797 - NUM_TRAIN} digits",
              FD_NOTE]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("npz", nargs="+", type=Path, help="files holding uint8 (N, 8, 8, 1) samples as arr_0")
    args = parser.parse_args(argv)
    rows = []
    for path in args.npz:
        if not path.is_file():
            print(f"error: {path}: no such file; pass .npz files written with np.savez", file=sys.stderr)
            return 2
        with np.load(path) as npz:
            if "arr_0" not in npz:
                print(f"error: {path}: no array arr_0 (has {list(npz)}); save with np.savez(path, samples)",
                      file=sys.stderr)
                return 2
            samples = npz["arr_0"]
        try:
            samples = check_samples(samples, str(path))
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        rows.append((str(path), score(samples)))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
