"""The protocol written with every number: what each figure of `ddpm eval` was measured with.

FIDs from different papers and repositories often cannot be compared because the sample count, the seeds, the
sampler, the reference set or the feature network differed and nobody wrote it down. `protocol` collects, for one
figure, everything its value depends on; eval stores it in the JSON under result["protocol"][metric] and prints it
as one line (`protocol_lines`, one line per group of figures measured the same way).

    ddpmkit               the version that computed it
    checkpoint, step, ema the weights: which checkpoint, its training step, EMA or raw weights
    samples_from          "model" (sampled here) or the --samples file, then its SHA-256
    sampler, steps, nfe, spacing, eta, guidance, classes, clip_denoised, n, seed     how the samples were drawn
    feature_network, feature_weights_sha256     the feature space (fid, is, pr, kid, acc)
    real_data, real_split, real_size            the reference set; for nll: n real images, T terms each
"""

from __future__ import annotations

import functools
from pathlib import Path

from .requirements import FEATURED, SAMPLED  # the metric groups, defined once



@functools.lru_cache(maxsize=8)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    from ..store import file_sha256

    return file_sha256(Path(path))


def _sha256_of(path) -> str:
    stat = Path(path).stat()
    return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)


def _sampling(request, pipe, n: int | None) -> dict:
    """How the images were drawn: the sampler and its settings, or the file they came from."""
    if request.samples is not None:
        return {"samples_from": str(request.samples), "samples_sha256": _sha256_of(request.samples), "n": n}
    sampler, steps, eta, spacing = pipe.sampler_settings(request.sampler, request.steps, request.eta, request.spacing)
    conditional = pipe.classes is not None
    return {"samples_from": "model", "sampler": sampler, "steps": steps or pipe.diffusion.num_timesteps,
            "nfe": pipe.nfe(sampler, steps), "spacing": spacing, "eta": eta,
            "guidance": (request.guidance or 0.0) if conditional else None,
            "classes": (request.classes or "data proportions") if conditional else None,
            # every sampler of ddpmkit clips its x0 prediction to [-1, 1] at each step (samplers/loop.py)
            "clip_denoised": bool(getattr(request, "clip_denoised", True)), "n": n, "seed": request.seed}


def protocol(metric: str, *, request, pipe=None, real=None, extractor=None, n: int | None = None) -> dict:
    """What figure `metric` was measured with (module docstring): a flat JSON-ready dict.

    request: the EvalRequest; pipe: the loaded Pipeline (None for --samples alone); real: the reference ImageDataset;
    extractor: the feature network used (None for nll, memo); n: the samples (or, for nll, real images) measured.
    """
    from .. import __version__

    out: dict = {"ddpmkit": __version__}
    if pipe is not None:
        out.update({"checkpoint": str(pipe.checkpoint), "step": pipe.step, "ema": request.ema,
                    # the network's arithmetic while sampling and bounding (ddpmkit.precision): bf16 moves the figures
                    "precision": getattr(pipe.precision, "name", "fp32")})
    if metric in SAMPLED:
        out.update(_sampling(request, pipe, n))
    elif metric == "nll":
        out.update({"n": n, "seed": request.seed, "terms": pipe.diffusion.num_timesteps if pipe is not None else None})
    if metric in FEATURED and extractor is not None:
        out.update({"feature_network": extractor.name, "feature_weights_sha256": extractor.weights_sha256})
    if real is not None:
        out.update({"real_data": real.name, "real_split": request.split, "real_size": len(real)})
    if metric == "memo":
        out["memo_reference"] = "train split (nearest neighbours) against the held-out split"
    return out


def record(ctx, metric: str) -> None:
    """Hook for evaluate(): store the protocol of `metric` in ctx.result["protocol"][metric] once it is measured."""
    if metric == "nll":
        n = ctx.result.get("nll_n")
    else:
        n = None if ctx._samples is None else len(ctx._samples)
    ctx.result.setdefault("protocol", {})[metric] = protocol(metric, request=ctx.request, pipe=ctx.pipe,
                                                             real=ctx.real, extractor=ctx._extractor, n=n)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "?"


def protocol_line(p: dict) -> str:
    """One line from a protocol dict: 'ancestral 1000 steps (NFE 1000) ... | ddpmkit 0.1.0'."""
    parts = []
    if p.get("samples_from") == "model":
        guided = "" if p.get("guidance") is None else f", guidance {p['guidance']:g}, classes {p['classes']}"
        parts.append(f"{p['sampler']} {p['steps']} steps (NFE {p['nfe']}, {p['spacing']} spacing, eta "
                     f"{p['eta']:g}{guided}), clip x0 {'on' if p['clip_denoised'] else 'off'}, n {p['n']}, "
                     f"seed {p['seed']}")
    elif "samples_from" in p:
        parts.append(f"samples {p['samples_from']} (sha256 {_short(p['samples_sha256'])}), n {p['n']}")
    elif "terms" in p:
        parts.append(f"bound on n {p['n']} real images, all {p['terms']} terms, seed {p['seed']}")
    if "feature_network" in p:
        parts.append(f"features {p['feature_network']} (sha256 {_short(p['feature_weights_sha256'])})")
    if "real_data" in p:
        parts.append(f"real {p['real_data']}/{p['real_split']} ({p['real_size']} images)")
    if "step" in p:
        precision = f", {p['precision']}" if "precision" in p else ""
        parts.append(f"checkpoint step {p['step']} ({'EMA' if p['ema'] else 'raw'} weights{precision})")
    parts.append(f"ddpmkit {p['ddpmkit']}")
    return " | ".join(parts)


def protocol_lines(protocols: dict[str, dict]) -> list[str]:
    """'protocol fid,kid,pr: ...' lines, figures with the same protocol sharing one line."""
    groups: dict[str, list[str]] = {}
    for metric, p in protocols.items():
        groups.setdefault(protocol_line(p), []).append(metric)
    return [f"protocol {','.join(metrics)}: {line}" for line, metrics in groups.items()]
