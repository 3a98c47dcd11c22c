"""`ddpm import-diffusers` and `ddpm export-diffusers`: diffusers' DDPM folders <-> ddpmkit run directories.

Import reads the flat layout of the google/ddpm-* repositories (config.json, diffusion_pytorch_model.safetensors,
scheduler_config.json side by side) or the pipeline layout of `DDPMPipeline.save_pretrained` (model_index.json,
unet/, scheduler/), and writes an ordinary run directory whose one checkpoint holds the weights as both "model" and
"ema" (the ddpm-ema-* repositories hold EMA weights). Export writes the pipeline layout that
`DDPMPipeline.from_pretrained(DIR)` loads. Only JSON and safetensors are read, by ddpmkit itself (diffusers is never
imported); a pickle (diffusion_pytorch_model.bin) is refused unread. Both write all or nothing (rundir.new_directory).
See diffusers_config.py for what maps and what is refused, diffusers_keys.py for the tensor names.
"""

from __future__ import annotations

import json
from pathlib import Path

import safetensors.torch as st
import torch

from .. import __version__
from ..config import RunConfig, load_config
from ..models import PRESETS
from ..models.build import build_model  # the same call that ddpmkit.load makes
from .checkpoint import MAX_JSON_BYTES
from .diffusers_config import UNetSpec, read_scheduler_config, read_unet_config, refusal, scheduler_config_for, \
    unet_config_for
from .diffusers_keys import modern_names, to_ddpmkit, to_diffusers
from .rundir import new_directory, open_run, write_run
from .safeload import CheckpointFileError, check_weights_fit, file_sha256, load_weights_file

WEIGHTS, PICKLED, UNET_JSON, SCHEDULER_JSON, INDEX_JSON = (
    "diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "config.json", "scheduler_config.json",
    "model_index.json")
_PIPELINE = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDPMScheduler"]}
_CONVERT = ("python -c \"import torch, safetensors.torch as st; st.save_file(torch.load('{bin}', weights_only=True), "
            "'{out}')\"")


def _read_json(path: Path):
    if not path.is_file():
        raise CheckpointFileError(path, "missing: a diffusers DDPM folder holds config.json, "
                                        "diffusion_pytorch_model.safetensors and scheduler_config.json")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise CheckpointFileError(path, f"larger than {MAX_JSON_BYTES} bytes, refusing to parse it")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, RecursionError) as err:
        raise CheckpointFileError(path, f"not valid JSON ({type(err).__name__}: {' '.join(str(err).split())})") from err


def locate(folder: Path) -> dict[str, Path]:
    """The files of a flat or pipeline-layout folder: {"layout", "unet", "weights", "scheduler"} (weights unchecked)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointFileError(folder, "no such directory (give the downloaded diffusers model folder)")
    if (folder / INDEX_JSON).exists():
        index = _read_json(folder / INDEX_JSON)
        for key, value in _PIPELINE.items():
            got = index.get(key) if isinstance(index, dict) else None
            if got != value:
                raise refusal(folder / INDEX_JSON, key, got, json.dumps(value) + " (a DDPMPipeline)")
        unet, scheduler = folder / "unet", folder / "scheduler"
        return {"layout": "pipeline", "unet": unet / UNET_JSON, "weights": unet / WEIGHTS,
                "scheduler": scheduler / SCHEDULER_JSON}
    if not (folder / UNET_JSON).exists():
        raise CheckpointFileError(folder, f"neither {INDEX_JSON} (pipeline layout) nor {UNET_JSON} (flat layout) "
                                          "is there: not a diffusers DDPM folder")
    return {"layout": "flat", "unet": folder / UNET_JSON, "weights": folder / WEIGHTS,
            "scheduler": folder / SCHEDULER_JSON}


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The safetensors weights; a folder with only the pickled .bin is refused without opening it."""
    if not path.is_file() and path.with_name(PICKLED).is_file():
        pickled = path.with_name(PICKLED)
        raise CheckpointFileError(pickled, "a pickle, which ddpmkit never opens because unpickling can run code; "
                                           "if you trust its source, convert it once with: "
                                           + _CONVERT.format(bin=pickled, out=path))
    if not path.is_file():
        raise CheckpointFileError(path, "missing: the weights must be diffusers' safetensors file")
    state, twice = modern_names(load_weights_file(path))
    if twice:
        raise CheckpointFileError(path, f"tensor {twice[0]} is there under its old and its new name")
    bad = [k for k, t in state.items() if not t.is_floating_point()]
    if bad:
        raise CheckpointFileError(path, f"tensor {bad[0]} is {state[bad[0]].dtype}, not floating point")
    return state


def _preset_for(spec: UNetSpec, folder: Path) -> str | None:
    """The preset whose network is `spec`'s (dropout aside): its [data] and [train] sections describe the run."""
    mine = {k: v for k, v in spec.unet_kwargs().items() if k not in ("dropout", "num_groups")}
    for name in ("cifar10", "celebahq256"):
        if mine == {k: v for k, v in PRESETS[name].items() if k != "dropout"} and spec.num_groups == 32:
            lsun = any(w in folder.resolve().name.lower() for w in ("lsun", "church", "bedroom", "cat"))
            return "lsun256" if name == "celebahq256" and lsun else name
    return None


def run_config_for(spec: UNetSpec, diffusion: dict, folder: Path, data: str | None = None) -> RunConfig:
    """The run config of an imported model: the matching preset (else the defaults), its network and process."""
    preset = _preset_for(spec, folder)
    base = load_config(preset) if preset else RunConfig()
    kw = spec.unet_kwargs()
    values = {"model.preset": preset or base.model.preset, "model.ch": kw["ch"], "model.ch_mult": list(kw["ch_mult"]),
              "model.num_res_blocks": kw["num_res_blocks"], "model.attn_resolutions": list(kw["attn_resolutions"]),
              "model.dropout": kw["dropout"], "model.num_groups": kw["num_groups"], "sample.steps": None,
              **{f"diffusion.{k}": v for k, v in diffusion.items()}}
    if data is not None:
        values["data.spec"] = data
    if preset is None:
        values["data.channels"] = spec.in_channels
    return base.with_values(values, source="import-diffusers")


def _expected(config: RunConfig, spec: UNetSpec, unet_file: Path) -> dict[str, torch.Tensor]:
    """The state_dict shapes of the network the run will rebuild (on the meta device: no memory, no init)."""
    with torch.device("meta"):
        net = build_model(config, spec.image_size, spec.in_channels)
    assert net.config == spec.unet_kwargs(), (net.config, spec.unet_kwargs())
    _check_groups(net, spec.num_groups, lambda c, g: refusal(
        unet_file, "norm_num_groups", spec.num_groups, f"a count that divides every layer's channels into groups "
        f"of 2 or more (ddpmkit would use {g} groups over {c} channels)"))
    return net.state_dict()


def _check_groups(net: torch.nn.Module, groups: int, error) -> None:
    for module in net.modules():
        if isinstance(module, torch.nn.GroupNorm) and module.num_groups != groups:
            raise error(module.num_channels, module.num_groups)


def _map_weights(state: dict, expected: dict, spec: UNetSpec, file: Path) -> dict[str, torch.Tensor]:
    weights, missing, extra, wrong = to_ddpmkit(state, expected, len(spec.ch_mult))
    if missing:
        raise CheckpointFileError(file, f"{len(missing)} tensors that config.json's network needs are missing "
                                        f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
    if extra:
        raise CheckpointFileError(file, f"{len(extra)} tensors that config.json's network has no place for "
                                        f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''})")
    if wrong:
        name, got, want = wrong[0]
        raise CheckpointFileError(file, f"tensor {name} has shape {list(got)}, config.json's network needs "
                                        f"{list(want)} ({len(wrong)} such)")
    return weights


def import_diffusers(folder: str | Path, out: str | Path, *, data: str | None = None) -> dict:
    """Turn a diffusers DDPM folder into run directory `out`; returns a summary (paths, config, counts)."""
    folder = Path(folder)
    files = locate(folder)
    spec = read_unet_config(_read_json(files["unet"]), files["unet"])
    diffusion = read_scheduler_config(_read_json(files["scheduler"]), files["scheduler"])
    state = _read_weights(files["weights"])
    config = run_config_for(spec, diffusion, folder, data)
    weights = _map_weights(state, _expected(config, spec, files["unet"]), spec, files["weights"])
    source = {"from": str(folder.resolve()), "layout": files["layout"], "weights_file": str(files["weights"]),
              "weights_sha256": file_sha256(files["weights"]), "unet_config": _read_json(files["unet"]),
              "scheduler_config": _read_json(files["scheduler"]), "ddpmkit_version": __version__}
    meta = {"image_size": spec.image_size, "channels": spec.in_channels, "imported": source}
    ckpt = write_run(out, config, meta, {"model": weights, "ema": weights},
                     state={"step": 0, "imported": True}, files={"imported.json": json.dumps(source, indent=2) + "\n"})
    return {"checkpoint": ckpt, "config": config, "layout": files["layout"], "tensors": len(state),
            "parameters": sum(t.numel() for t in weights.values())}


def export_diffusers(run_dir: str | Path, out: str | Path, *, ema: bool = True) -> dict:
    """Write run `run_dir` (its newest valid checkpoint, or a checkpoint folder) as a DDPMPipeline folder `out`."""
    run = open_run(run_dir)
    source = run.path / "config.json"
    scheduler = scheduler_config_for(run.config.to_dict()["diffusion"], str(source))
    with torch.device("meta"):
        net = build_model(run.config, run.image_size, run.channels)
    name, weights = run.weights(ema)
    check_weights_fit(net, weights, f"{run.path}/{name}.safetensors")
    c = net.config
    spec = UNetSpec(c["in_channels"], c["out_channels"], c["image_size"], c["ch"], c["ch_mult"], c["num_res_blocks"],
                    tuple(i for i, level in enumerate(net.down) if len(level.attn)), c["dropout"], c["num_groups"])
    _check_groups(net, spec.num_groups, lambda ch, g: CheckpointFileError(source, (
        f"the network's GroupNorm over {ch} channels has {g} groups, not model.num_groups = {spec.num_groups}; "
        "diffusers' UNet2DModel uses norm_num_groups for every GroupNorm, so this net cannot be exported exactly")))
    theirs, unmapped = to_diffusers(weights, len(spec.ch_mult))
    if unmapped:
        raise CheckpointFileError(source, f"the network has tensors diffusers' UNet2DModel has no place for "
                                          f"({', '.join(unmapped[:3])}): class conditioning is not exported")
    with new_directory(out) as tmp:
        (tmp / "unet").mkdir()
        (tmp / "scheduler").mkdir()
        index = {**_PIPELINE, "_ddpmkit_version": __version__, "_ddpmkit_source": str(run.path.resolve())}
        for path, obj in ((INDEX_JSON, index), (f"unet/{UNET_JSON}", unet_config_for(spec)),
                          (f"scheduler/{SCHEDULER_JSON}", scheduler)):
            (tmp / path).write_text(json.dumps(obj, indent=2) + "\n")
        st.save_file(theirs, tmp / "unet" / WEIGHTS, metadata={"format": "pt"})
    return {"out": Path(out), "weights": name, "step": run.step, "tensors": len(theirs),
            "parameters": sum(t.numel() for t in theirs.values())}
