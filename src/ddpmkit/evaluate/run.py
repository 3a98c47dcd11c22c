"""`ddpm eval`: the paper's measurements from one call; each metric is one small function picked from a dict.

References:
    [DDPM]  Ho, Jain & Abbeel 2020: NLL in bits/dim, FID and IS (Table 1).
    [FID]   Heusel et al. 2017.  [IS] Salimans et al. 2016.  [PR] Kynkaanniemi et al. 2019 (k = 3).

Feature-based numbers (fid, is, pr) are only comparable within one feature space: the report names it.
Real statistics come from the real split as stored, never augmented, and are cached by data set and extractor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import ImageDataset, load_dataset
from ..errors import DataError, UserError
from ..samplers import model_device

METRICS = ("nll", "fid", "is", "pr", "memo", "acc")


@dataclass
class EvalRequest:
    data: str | None  # None: the run's own data set
    run_dir: Path | None = None
    checkpoint: Path | None = None
    samples: Path | None = None
    split: str = "test"
    metrics: tuple[str, ...] = ("nll", "fid", "pr")
    n: int = 1000
    nll_n: int = 256
    ema: bool = True
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    spacing: str | None = None
    batch_size: int = 256
    seed: int = 0
    inception: Path | None = None
    features: Path | None = None
    device: str | None = None
    progress: bool = True
    out_dir: Path | None = None  # where per-t terms and the memorisation PNG go
    cache: object = None  # a folder of images through the decoded-image cache: see ddpmkit.data.load_dataset
    classes: str | None = None  # conditional run: --class (default: the training data's proportions)
    guidance: float | None = None  # conditional run: --guidance w
    precision: str | None = None  # the network's while sampling (ddpmkit.precision); None: the run's [sample]


@dataclass
class _Context:
    request: EvalRequest
    real: ImageDataset
    pipe: object = None
    _samples: np.ndarray | None = None
    _labels: np.ndarray | None = None
    _extractor: object = None
    _feats: dict = field(default_factory=dict)
    result: dict = field(default_factory=dict)

    def samples(self) -> np.ndarray:
        if self._samples is None:
            r = self.request
            if r.samples is not None:
                self._samples, self._labels = read_samples(r.samples, self.real, with_labels=True)
            else:
                from .conditional import sample_labels

                self._labels = sample_labels(self.pipe, r)
                self._samples = self.pipe.sample(r.n, sampler=r.sampler, steps=r.steps, eta=r.eta, spacing=r.spacing,
                                                 seed=r.seed, batch_size=r.batch_size, progress=r.progress,
                                                 classes=self._labels,
                                                 guidance=r.guidance if self._labels is not None else None)
        return self._samples

    def labels(self) -> np.ndarray | None:
        """The class each sample was drawn for (a conditional run, or arr_1 of --samples), else None."""
        self.samples()
        return self._labels

    def extractor(self):
        if self._extractor is None:
            r = self.request
            if r.features is not None:
                from .classifier import load_classifier

                self._extractor = load_classifier(r.features)
            else:
                from .inception import load_inception

                self._extractor = load_inception(r.inception)
            self.result["feature_extractor"] = self._extractor.name
        return self._extractor

    def features(self, which: str) -> dict:
        """{"features", "logits"} of the samples ("fake") or the real split ("real")."""
        if which not in self._feats:
            images = self.samples() if which == "fake" else self.real.images
            self._feats[which] = self.extractor()(images, progress=self.request.progress)
        return self._feats[which]


def read_samples(path: Path, real: ImageDataset, with_labels: bool = False):
    """uint8 (N, H, W, C) from an .npz (key arr_0, the ADM format) that fits the real data; with_labels, also the
    labels (N,) in arr_1 (as ddpm sample --npz of a conditional run writes them), or None."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arr = f["arr_0"] if "arr_0" in f.files else f[f.files[0]]
            labels = f["arr_1"] if "arr_0" in f.files and "arr_1" in f.files else None
    except (OSError, ValueError, KeyError, IndexError) as err:
        raise DataError(f"--samples {path}: cannot be read as an .npz of images ({err})") from None
    if arr.dtype != np.uint8:
        raise DataError(f"--samples {path}: dtype {arr.dtype}, expected uint8 (N, H, W, C) as ddpm sample --npz writes")
    if arr.ndim != 4 or arr.shape[1:] != real.images.shape[1:]:
        expected = ", ".join(map(str, real.images.shape[1:]))
        raise DataError(f"--samples {path}: shape {arr.shape}, expected (N, {expected}) "
                        f"to match {real.name}")
    if not with_labels:
        return arr
    if labels is not None and (labels.shape != (len(arr),) or not np.issubdtype(labels.dtype, np.integer)):
        raise DataError(f"--samples {path}: arr_1 is {labels.dtype} {labels.shape}, expected {len(arr)} integer "
                        "labels (one per image in arr_0), or no arr_1")
    return arr, None if labels is None else labels.astype(np.int64)


def _nll(ctx: _Context) -> None:
    from .nll import bits_per_dim, save_terms

    if ctx.pipe is None:
        raise UserError("--metrics nll needs a trained run (RUN_DIR), not only --samples")
    from .conditional import nll_model

    r, pipe = ctx.request, ctx.pipe
    images = ctx.real.images[: r.nll_n]
    model, one_batch = nll_model(pipe, ctx.real, len(images))  # a conditional run: its bound given the labels
    from ..precision import under  # bf16 moves the bound by < 0.1% (docs/PERFORMANCE.md): it follows --precision

    out = bits_per_dim(pipe.diffusion, under(model, pipe.precision), images, batch_size=one_batch or r.batch_size,
                       seed=r.seed, progress=r.progress, device=model_device(pipe.model))
    if one_batch:
        ctx.result["nll_note"] = "conditional bound -log p(x0 | c) with the real labels, unguided"
    ctx.result.update({k: out[k] for k in ("nll_bpd", "nll_bpd_sem", "prior_bpd", "decoder_bpd",
                                           "diffusion_bpd_by_quarter")})
    ctx.result["nll_n"] = len(images)
    if r.out_dir is not None:
        save_terms(out, r.out_dir / "nll_terms.npz")
        ctx.result["nll_terms_file"] = str(r.out_dir / "nll_terms.npz")


def _fid(ctx: _Context) -> None:
    from .fid import cached_stats, feature_stats, frechet_distance

    ext, r = ctx.extractor(), ctx.request
    key = f"{ctx.real.name}|{r.split}|{len(ctx.real)}|{ext.name}|{ext.weights_sha256}"
    mu_r, sigma_r = cached_stats(key, lambda: ctx.features("real")["features"])
    mu_f, sigma_f = feature_stats(ctx.features("fake")["features"])
    ctx.result["fid"] = frechet_distance(mu_f, sigma_f, mu_r, sigma_r)


def _is(ctx: _Context) -> None:
    from .fid import inception_score

    fake = ctx.features("fake")
    # the reference IS takes the softmax of pool3 @ W without the bias; the Inception extractor gives that too
    mean, std = inception_score(fake.get("logits_unbiased", fake["logits"]))
    ctx.result.update({"is_mean": float(mean), "is_std": float(std)})


def _pr(ctx: _Context) -> None:
    from .precision_recall import precision_recall

    real = ctx.features("real")["features"]
    out = precision_recall(real, ctx.features("fake")["features"], k=3)
    ctx.result.update({"precision": float(out["precision"]), "recall": float(out["recall"])})


def _memo(ctx: _Context) -> None:
    from .memorisation import memorisation, save_closest_pairs

    r = ctx.request
    if r.split == "train":
        raise UserError("--metrics memo compares with held-out images: use --split test")
    train = load_dataset(r.data, image_size=ctx.real.image_size, channels=ctx.real.channels, split="train",
                         cache=r.cache)
    out = memorisation(ctx.samples(), train.images, ctx.real.images)
    ctx.result["memorisation"] = float(out["ratio"])
    ctx.result["memorisation_detail"] = {k: float(out[k]) for k in ("gen_to_train_median", "heldout_to_train_median")}
    if r.out_dir is not None:
        save_closest_pairs(ctx.samples(), train.images, out, r.out_dir / "memorisation_pairs.png")
        ctx.result["memorisation_pairs"] = str(r.out_dir / "memorisation_pairs.png")


def _data_options(request: EvalRequest, pipe) -> dict:
    """The run's resizing and channels when evaluating on the data set it was trained on; else the data as is."""
    if pipe is not None and request.data == pipe.config.data.spec:
        return {"image_size": pipe.config.data.image_size, "channels": pipe.config.data.channels}
    return {}


def _acc(ctx: _Context) -> None:
    from .conditional import accuracy, check_acc

    check_acc(ctx)
    names = ctx.pipe.classes if ctx.pipe is not None else [str(i) for i in range(int(ctx.labels().max()) + 1)]
    ctx.result.update(accuracy(ctx.features("fake")["logits"], ctx.labels(), names))


RUNNERS = {"nll": _nll, "fid": _fid, "is": _is, "pr": _pr, "memo": _memo, "acc": _acc}


def evaluate(request: EvalRequest) -> dict:
    """Run the requested metrics; returns the JSON-ready result with what was used."""
    bad = [m for m in request.metrics if m not in RUNNERS]
    if bad:
        raise UserError(f"--metrics {','.join(bad)}: unknown; choose from {','.join(METRICS)}")
    if request.run_dir is None and request.samples is None:
        raise UserError("ddpm eval needs RUN_DIR or --samples FILE")
    pipe = None
    if request.run_dir is not None or request.checkpoint is not None:
        from ..pipeline import load

        pipe = load(request.checkpoint or request.run_dir, ema=request.ema, device=request.device,
                    precision=request.precision)
        if pipe.classes is None and (request.classes is not None or request.guidance is not None):
            from ..classes import unconditional_error

            raise unconditional_error("--class" if request.classes is not None else "--guidance", request.run_dir)
        if request.data is None:
            request.data = pipe.config.data.spec
    real = load_dataset(request.data, split=request.split, cache=request.cache, **_data_options(request, pipe))
    if pipe is not None and (real.image_size, real.channels) != (pipe.image_size, pipe.channels):
        size = pipe.image_size
        raise DataError(f"--data {request.data}: images are {real.image_size}x{real.image_size}x{real.channels}, the "
                        f"model makes {size}x{size}x{pipe.channels}: evaluate on the data set it was trained on")
    ctx = _Context(request, real, pipe)
    if pipe is not None:
        sampler, steps, _, spacing = pipe.sampler_settings(request.sampler, request.steps, request.eta,
                                                           request.spacing)
        ctx.result.update({"checkpoint": str(pipe.checkpoint), "step": pipe.step, "ema": request.ema,
                           "sampler": sampler, "steps": steps or pipe.diffusion.num_timesteps, "spacing": spacing,
                           "nfe": pipe.nfe(sampler, steps)})
    ctx.result.update({"data": real.name, "split": request.split, "n_real": len(real)})
    for metric in request.metrics:
        RUNNERS[metric](ctx)
    if ctx._samples is not None:
        ctx.result["n"] = len(ctx._samples)
        ctx.result["samples_from"] = str(request.samples) if request.samples else "model"
        if pipe is not None and pipe.classes is not None and request.samples is None:
            ctx.result["classes_sampled"] = request.classes or "the training data's proportions"
            ctx.result["guidance"] = request.guidance or 0.0
    if "feature_extractor" in ctx.result:
        ctx.result["feature_space_note"] = (f"fid/is/pr are in the feature space of {ctx.result['feature_extractor']}"
                                            "; comparable only with numbers in that same space")
    return ctx.result
