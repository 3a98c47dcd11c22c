"""What each `ddpm eval` metric needs, checked before any work starts: one line and exit 2, in milliseconds.

A refusal after the work is the worst kind: `ddpm eval RUN --metrics nll,pr,memo` without a feature network used to
compute the bound for six minutes and then stop on the missing Inception file, losing the bound. `check_request`
looks only at paths, file headers and small JSON files (never a network, never the weights), so it is cheap enough
to run first, always. Each requirement is one small function picked from `NEEDS` by metric name.

    needs        metrics                 what is checked
    model        nll                     a run directory (the bound needs the network, not an .npz of samples)
    features     fid, is, pr, kid        --features CLASSIFIER, or Inception weights (--inception / $DDPMKIT_INCEPTION)
    classifier   acc                     --features CLASSIFIER (its classes tell which class a sample shows)
    labels       acc                     a conditional run, or --samples with labels in arr_1
    heldout      memo                    --split test (memorisation compares with held-out images)
    (all sampled)                        --sampler/--steps/--eta/--spacing fit the run (its T, its [sample])
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from ..errors import UserError

METRICS = ("nll", "fid", "is", "pr", "memo", "acc", "kid")
SPLITS = ("train", "test", "all")
MIN_SAMPLES = {"fid": 2, "kid": 2, "pr": 4, "is": 10}  # covariance, MMD^2_u, k + 1 for k = 3, 10 IS splits
BUILTIN_DATA = ("digits", "fashion-mnist", "fashion_mnist")
SAMPLED = ("fid", "is", "pr", "kid", "memo", "acc")  # metrics of generated images
FEATURED = ("fid", "is", "pr", "kid", "acc")  # metrics in a feature space (the extractor's outputs of the samples)


def _need_model(request, metric: str) -> None:
    if request.run_dir is None and request.checkpoint is None:
        raise UserError(f"--metrics {metric} needs a trained run (RUN_DIR), not only --samples")


def _need_features(request, metric: str) -> None:
    if request.features is not None:
        return
    inception = request.inception or os.environ.get("DDPMKIT_INCEPTION") or None
    if inception is None:
        raise UserError(f"--metrics {metric} needs a feature network: --features CLASSIFIER (from ddpm "
                        "train-classifier) or the Inception weights (--inception FILE or $DDPMKIT_INCEPTION)")
    _need_file(inception, "--inception" if request.inception else "$DDPMKIT_INCEPTION")


def _need_classifier(request, metric: str) -> None:
    if request.features is None:
        raise UserError(f"--metrics {metric} needs --features CLASSIFIER (a .safetensors from ddpm train-classifier "
                        "on the run's data) to tell the class of each sample")


def _need_labels(request, metric: str) -> None:
    if request.samples is not None:
        if "arr_1" not in _npz_names(request.samples):
            raise UserError(f"--metrics {metric} needs labelled samples: --samples {request.samples} has no arr_1 "
                            "(ddpm sample --npz of a conditional run writes the labels there)")
    elif not _is_conditional(request.checkpoint or request.run_dir):
        raise UserError(f"--metrics {metric} needs a conditional run (ddpm train --conditional): "
                        f"{request.checkpoint or request.run_dir} has no classes")


def _need_heldout(request, metric: str) -> None:
    if request.split == "train":
        raise UserError(f"--metrics {metric} compares with held-out images: use --split test")


NEEDS = {"model": _need_model, "features": _need_features, "classifier": _need_classifier,
         "labels": _need_labels, "heldout": _need_heldout}
METRIC_NEEDS = {"nll": ("model",), "fid": ("features",), "is": ("features",), "pr": ("features",),
                "kid": ("features",), "memo": ("heldout",), "acc": ("classifier", "labels")}


def _need_file(path, flag: str) -> None:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file")


def _npz_names(path: Path) -> list[str]:
    """The array names of an .npz from its zip directory alone (nothing is decompressed)."""
    try:
        with zipfile.ZipFile(path) as z:
            return [name.removesuffix(".npy") for name in z.namelist()]
    except (OSError, zipfile.BadZipFile) as err:
        raise UserError(f"--samples {path}: cannot be read as an .npz of images ({err})") from None


def _checkpoint_meta(path: Path) -> dict | None:
    """config.json of the checkpoint folder `path`, or of the newest one in run directory `path`, unverified (the
    load verifies it; this only decides refusals), or None where there is none to read."""
    from ..store.checkpoint import CONFIG_JSON, MANIFEST, list_checkpoints

    path = Path(path)
    folder = path if (path / MANIFEST).exists() else next(iter(list_checkpoints(path / "checkpoints")[::-1]), None)
    try:
        return json.loads((folder / CONFIG_JSON).read_text()) if folder is not None else None
    except (OSError, ValueError):
        return None


def _is_conditional(path: Path) -> bool:
    meta = _checkpoint_meta(path)
    return meta is None or bool((meta.get("classes") or {}).get("names"))  # unreadable: the load will tell


def _check_sources(request) -> None:
    """The paths and options every metric shares: a run or --samples, --data for --samples, files that exist."""
    if request.run_dir is None and request.samples is None and request.checkpoint is None:
        raise UserError("ddpm eval needs RUN_DIR or --samples FILE")
    if request.samples is not None and request.data is None and request.run_dir is None:
        raise UserError("--samples needs --data SPEC to compare with")
    for flag, path, kind in (("RUN_DIR", request.run_dir, "dir"), ("--checkpoint", request.checkpoint, "dir"),
                             ("--samples", request.samples, "file"), ("--features", request.features, "file")):
        if path is not None and not (Path(path).is_dir() if kind == "dir" else Path(path).is_file()):
            raise UserError(f"{flag} {path}: no such {'directory' if kind == 'dir' else 'file'}")
    data = request.data
    if data is not None and str(data).strip().lower() not in BUILTIN_DATA and not Path(data).expanduser().exists():
        raise UserError(f"--data {data}: no such file or folder (digits, fashion-mnist, a folder or a file)")
    if request.split not in SPLITS:
        raise UserError(f"--split {request.split}: choose one of {', '.join(SPLITS)}")
    out = getattr(request, "out_dir", None)
    if out is not None and Path(out).is_dir() and not os.access(out, os.W_OK):
        raise UserError(f"--json: cannot write into {out}: choose a writable folder")


def _check_conditioning(request) -> None:
    """--class / --guidance are for conditional runs: refused now rather than after the run is loaded."""
    asked = "--class" if request.classes is not None else "--guidance" if request.guidance is not None else None
    if asked and request.samples is None and not _is_conditional(request.checkpoint or request.run_dir):
        from ..classes import unconditional_error

        raise unconditional_error(asked, request.checkpoint or request.run_dir)


def _check_sampler(request) -> None:
    """--sampler/--steps/--eta/--spacing against the run's T and [sample] config, with the pipeline's own checks."""
    from types import SimpleNamespace

    from ..config import RunConfig
    from ..pipeline import Pipeline

    if request.samples is not None or not set(request.metrics) & set(SAMPLED):
        return
    meta = _checkpoint_meta(request.checkpoint or request.run_dir)
    if meta is None or "run" not in meta:
        return  # nothing readable: the load names the problem
    config = RunConfig.from_dict(meta["run"], source="the run's config.json")
    stand_in = SimpleNamespace(config=config, diffusion=SimpleNamespace(num_timesteps=config.diffusion.timesteps))
    Pipeline.sampler_settings(stand_in, request.sampler, request.steps, request.eta, request.spacing)


def check_request(request) -> None:
    """Refuse an EvalRequest that cannot finish, before anything is loaded or computed (UserError, one line)."""
    unknown = [m for m in request.metrics if m not in METRIC_NEEDS]
    if unknown or not request.metrics:
        raise UserError(f"--metrics {','.join(unknown) or '(none)'}: unknown; choose from {','.join(METRICS)}")
    _check_sources(request)
    _check_conditioning(request)
    _check_sampler(request)
    for metric in request.metrics:
        for need in METRIC_NEEDS[metric]:
            NEEDS[need](request, metric)
        if request.samples is None and metric in MIN_SAMPLES and request.n < MIN_SAMPLES[metric]:
            raise UserError(f"--metrics {metric} needs at least {MIN_SAMPLES[metric]} samples: raise --n "
                            f"(now {request.n})")
    if "nll" in request.metrics and request.nll_n < 1:
        raise UserError(f"--nll-n {request.nll_n}: must be at least 1")
