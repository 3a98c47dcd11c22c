"""`ddpm eval`: the paper's measurements from one call; each metric is one small function picked from a dict.

References:
    [DDPM]  Ho, Jain & Abbeel 2020: NLL in bits/dim, FID and IS (Table 1).
    [FID]   Heusel et al. 2017.  [IS] Salimans et al. 2016.  [PR] Kynkaanniemi et al. 2019 (k = 3).

Feature-based numbers (fid, is, pr) are only comparable within one feature space: the report names it.
Real statistics come from the real split as stored, never augmented, and are cached by data set and extractor.

The samples (with their features) and the bound are long jobs (ddpmkit.jobs): split over the ranks under torchrun,
image i's noise from (seed, i) only, resumable from the shards beside the JSON (JSON.shards/). Every rank takes part
in the jobs; rank 0 computes the metrics from what they gather and writes the JSON after each metric, so a later
failure loses nothing already measured. The shards are removed when the whole evaluation is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data import ImageDataset, load_dataset
from ..distributed import DistInfo
from ..errors import DataError, UserError
from ..samplers import model_device
from .requirements import FEATURED, SAMPLED  # the metric groups, defined once (requirements.py)



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
    json: Path | None = None  # the result, rewritten (atomically) as soon as each metric is known
    shards: Path | None = None  # the jobs' shard folder (default JSON.shards; None without json: in memory)
    precision: str | None = None  # the network's while sampling (ddpmkit.precision); None: the run's [sample]


@dataclass
class _Context:
    request: EvalRequest
    real: ImageDataset
    pipe: object = None
    info: DistInfo = field(default_factory=DistInfo)
    _fake: dict | None = None  # rows of the samples: images, labels (if any), the extractor's outputs (if any)
    _bound: dict | None = None  # rows of the bound: total_bpd, prior_bpd, terms_bpd, x0_mse
    _extractor: object = None
    _feats: dict = field(default_factory=dict)
    jobs: list = field(default_factory=list)
    result: dict = field(default_factory=dict)

    @property
    def shard_root(self) -> Path | None:
        from ..jobs import shard_root

        r = self.request
        return r.shards if r.shards is not None else (shard_root(r.json) if r.json is not None else None)

    def fake(self) -> dict:
        """The samples' rows: from --samples, or from the sampling job (every rank takes part; rows on rank 0)."""
        if self._fake is None:
            r = self.request
            if r.samples is not None:
                images, labels = read_samples(r.samples, self.real, with_labels=True)
                self._fake = {"images": images, **({} if labels is None else {"labels": labels})}
            else:
                self._fake = self._sample()
            if self.info.is_main:
                self.result["n"] = len(self._fake["images"])
                self.result["samples_from"] = str(r.samples) if r.samples else "model"
        return self._fake

    def _sample(self) -> dict:
        from ..jobs import run_job, sample_job
        from .conditional import sample_labels

        r, pipe = self.request, self.pipe
        labels = sample_labels(pipe, r)
        features = self.extractor() if any(m in FEATURED for m in r.metrics) else None
        job = sample_job(pipe, r.n, seed=r.seed, sampler=r.sampler, steps=r.steps, eta=r.eta, spacing=r.spacing,
                         labels=labels, guidance=r.guidance if labels is not None else None, features=features,
                         ema=r.ema, batch_size=r.batch_size, root=self.shard_root, progress=r.progress)
        self.jobs.append(job)
        if pipe.classes is not None:
            self.result["classes_sampled"] = r.classes or "the training data's proportions"
            self.result["guidance"] = r.guidance or 0.0
        return run_job(job, self.info) or {}

    def bound(self) -> dict:
        """The bound's rows of the first nll_n real images (every rank takes part; rows on rank 0)."""
        if self._bound is None:
            from ..jobs import run_job
            from .nll import bound_job

            r, pipe = self.request, self.pipe
            if pipe is None:
                raise UserError("--metrics nll needs a trained run (RUN_DIR), not only --samples")
            images = self.real.images[: r.nll_n]
            labels = None
            if pipe.classes is not None:  # a conditional run: its bound given each image's label
                if self.real.labels is None:
                    raise UserError(f"--metrics nll of a conditional run needs the real images' labels; "
                                    f"{self.real.name} has none: evaluate on its own labelled data set")
                labels = self.real.labels[: len(images)]
            job = bound_job(pipe, images, labels=labels, seed=r.seed, batch_size=r.batch_size, root=self.shard_root,
                            progress=r.progress, identity={"ema": r.ema, "data": self.real.name, "split": r.split})
            self.jobs.append(job)
            self._bound = run_job(job, self.info) or {}
        return self._bound

    def samples(self) -> np.ndarray:
        return self.fake()["images"]

    @property
    def _samples(self) -> np.ndarray | None:
        """The samples if they were drawn or read already, else None (without drawing them)."""
        return None if not self._fake else self._fake.get("images")

    def labels(self) -> np.ndarray | None:
        """The class each sample was drawn for (a conditional run, or arr_1 of --samples), else None."""
        return self.fake().get("labels")

    def extractor(self):
        if self._extractor is None:
            r = self.request
            if r.features is not None:
                from .classifier import load_classifier

                self._extractor = load_classifier(r.features, device=self._device())
            else:
                from .inception import load_inception

                self._extractor = load_inception(r.inception, device=self._device())
            self.result["feature_extractor"] = self._extractor.name
        return self._extractor

    def _device(self):
        """Where the feature network runs: beside the model (each rank's device), else the CPU."""
        return model_device(self.pipe.model) if self.pipe is not None else "cpu"

    def features(self, which: str) -> dict:
        """{"features", "logits", ...} of the samples ("fake", computed in the sampling job where it ran) or the
        real split ("real")."""
        if which not in self._feats:
            if which == "fake" and "features" in self.fake():
                self._feats[which] = {k: v for k, v in self.fake().items() if k not in ("images", "labels")}
            else:
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
    from .nll import save_terms, summarize_bound

    r, pipe = ctx.request, ctx.pipe
    rows = ctx.bound()
    out = summarize_bound(rows, pipe.diffusion.num_timesteps)
    if pipe.classes is not None:
        ctx.result["nll_note"] = "conditional bound -log p(x0 | c) with the real labels, unguided"
    ctx.result.update({k: out[k] for k in ("nll_bpd", "nll_bpd_sem", "prior_bpd", "decoder_bpd",
                                           "diffusion_bpd_by_quarter")})
    ctx.result["nll_n"] = len(rows["total_bpd"])
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


def _kid(ctx: _Context) -> None:
    from .kid import kid

    ctx.result.update(kid(ctx.features("real")["features"], ctx.features("fake")["features"], seed=ctx.request.seed))


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


RUNNERS = {"nll": _nll, "fid": _fid, "is": _is, "pr": _pr, "memo": _memo, "acc": _acc, "kid": _kid}


def evaluate(request: EvalRequest, info: DistInfo | None = None) -> dict | None:
    """Run the requested metrics; returns the JSON-ready result with what was used (None on ranks other than 0
    under torchrun: `info` from ddpmkit.distributed.setup; every rank calls this with the same request)."""
    from .requirements import check_request

    check_request(request)  # every metric's needs (unknown metrics too), before any work: one line, exit 2
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
    ctx = _Context(request, real, pipe, info or DistInfo())
    if pipe is not None:
        sampler, steps, _, spacing = pipe.sampler_settings(request.sampler, request.steps, request.eta,
                                                           request.spacing)
        ctx.result.update({"checkpoint": str(pipe.checkpoint), "step": pipe.step, "ema": request.ema,
                           "sampler": sampler, "steps": steps or pipe.diffusion.num_timesteps, "spacing": spacing,
                           "nfe": pipe.nfe(sampler, steps)})
    ctx.result.update({"data": real.name, "split": request.split, "n_real": len(real)})
    for metric in request.metrics:
        _run_metric(ctx, metric)
    if "feature_extractor" in ctx.result:
        ctx.result["feature_space_note"] = (f"fid/is/pr/kid are in the feature space of "
                                            f"{ctx.result['feature_extractor']}; comparable only with numbers in "
                                            "that same space")
    if not ctx.info.is_main:
        return None
    _write(ctx)
    from ..jobs import remove_shards

    for job in ctx.jobs:  # everything is written: the shards are no longer needed
        remove_shards(job)
    return ctx.result


def _run_metric(ctx: _Context, metric: str) -> None:
    """The jobs the metric needs, on every rank; then the metric itself on rank 0, and the JSON rewritten."""
    if metric == "nll":
        ctx.bound()
    elif metric in SAMPLED and ctx.request.samples is None:
        ctx.fake()
    if ctx.info.is_main:
        from .protocol import record

        RUNNERS[metric](ctx)
        record(ctx, metric)  # result["protocol"][metric]: what this figure was measured with, saved with it
        _write(ctx)


def _write(ctx: _Context) -> None:
    """The result so far as the JSON file (atomically), if one is asked for."""
    import json

    from ..fileio import atomic_path

    if ctx.request.json is not None:
        with atomic_path(ctx.request.json) as tmp:
            tmp.write_text(json.dumps(ctx.result, indent=2) + "\n")
