"""diffusers' config.json (UNet2DModel) and scheduler_config.json (DDPMScheduler) <-> ddpmkit's run config.

Every key is either mapped exactly or refused with one line naming the file, the key, its value and what ddpmkit
supports; nothing is approximated. A key missing from a file has diffusers' default (the tables below, those of
diffusers 0.42's UNet2DModel and DDPMScheduler), because that is what diffusers would build.

The UNet: the DDPM network [DDPM App. B] is UNet2DModel with positional time embedding (flip_sin_to_cos false,
freq_shift 1: sin first, frequencies 10000^(-i/(half-1))), GroupNorm eps 1e-6, one attention head over all
channels (attention_head_dim null), right/bottom-padded stride-2 downsampling (downsample_padding 0) and
DownBlock2D / AttnDownBlock2D levels mirrored by UpBlock2D / AttnUpBlock2D.

The scheduler: num_train_timesteps -> timesteps; beta_schedule "linear" (beta_start, beta_end) -> linear,
"squaredcos_cap_v2" -> cosine [IDDPM Eq. 17] (checked: diffusers' betas equal ddpmkit's rounded to float32);
trained_betas -> linear or cosine when they equal one of them in float64 bit for bit. diffusers computes the linear
schedule in float32 (torch.linspace), ddpmkit in float64 as the paper's code did: the two differ by at most one
float32 rounding (1.4e-9 for T = 1000). variance_type fixed_small (and fixed_small_log, the same distribution) and
fixed_large map to ddpmkit's; prediction_type epsilon / sample / v_prediction to eps / x0 / v. clip_sample must be
true with range 1 (ddpmkit's samplers clip x0 to [-1, 1]). timestep_spacing and steps_offset only choose diffusers'
timesteps for fewer inference steps than T; ddpmkit respaces on its own (--steps), so they are not part of the model.
learned_range is refused both ways: ddpmkit clamps the network's v to [-1, 1], diffusers does not. So is learned:
ddpmkit's (the authors') second half is log sigma^2, diffusers' variance_type "learned" reads it as sigma^2 itself.
parameterization "xprev" (the network predicts mu~_t [DDPM Eq. 7]) is refused on export: diffusers has no
prediction_type for it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import schedules
from .safeload import CheckpointFileError

UNET_DEFAULTS: dict[str, Any] = {
    "sample_size": None, "in_channels": 3, "out_channels": 3, "center_input_sample": False,
    "time_embedding_type": "positional", "time_embedding_dim": None, "freq_shift": 0, "flip_sin_to_cos": True,
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    "mid_block_type": "UNetMidBlock2D", "up_block_types": ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    "block_out_channels": [224, 448, 672, 896], "layers_per_block": 2, "mid_block_scale_factor": 1,
    "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": 0.0, "act_fn": "silu",
    "attention_head_dim": 8, "norm_num_groups": 32, "attn_norm_num_groups": None, "norm_eps": 1e-5,
    "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None, "num_class_embeds": None,
    "num_train_timesteps": None,
}  # fmt: skip
SCHEDULER_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "variance_type": "fixed_small", "clip_sample": True, "prediction_type": "epsilon",
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "clip_sample_range": 1.0, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False,
}  # fmt: skip

# key -> (the values ddpmkit can express, how to say them)
_UNET_FIXED = {
    "center_input_sample": ([False], "false"), "time_embedding_type": (["positional"], '"positional"'),
    "freq_shift": ([1], "1 (frequencies 10000^(-i/(half-1)), as the paper's code)"),
    "flip_sin_to_cos": ([False], "false (sin before cos, as the paper's code)"),
    "mid_block_type": (["UNetMidBlock2D"], '"UNetMidBlock2D"'), "mid_block_scale_factor": ([1], "1"),
    "downsample_padding": ([0], "0 (pad right and bottom, as the paper's code)"),
    "downsample_type": (["conv"], '"conv"'), "upsample_type": (["conv"], '"conv"'),
    "act_fn": (["silu", "swish"], '"silu"'), "norm_eps": ([1e-6], "1e-06 (the paper's GroupNorm eps)"),
    "resnet_time_scale_shift": (["default"], '"default" (the time embedding added as a bias)'),
    "add_attention": ([True], "true (attention in the middle block)"),
    "class_embed_type": ([None], "null (no class conditioning)"), "num_class_embeds": ([None], "null"),
}
_PREDICTION = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
_VARIANCE = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small", "fixed_large": "fixed_large"}
_SCHEDULER_FIXED = {
    "clip_sample": ([True], "true (ddpmkit's samplers clip x0 to [-1, 1])"), "clip_sample_range": ([1.0], "1.0"),
    "thresholding": ([False], "false"), "rescale_betas_zero_snr": ([False], "false"),
}
_SCHEDULER_IGNORED = {"dynamic_thresholding_ratio", "sample_max_value", "timestep_spacing", "steps_offset"}


def refusal(file: Path, key: str, value: Any, supported: str) -> CheckpointFileError:
    """One line: the file, the key and its value, and what ddpmkit supports instead."""
    return CheckpointFileError(file, f"{key} = {json.dumps(value)} cannot be expressed exactly by ddpmkit; "
                                     f"supported: {supported}")


def _same(value: Any, allowed: list) -> bool:
    """value is one of `allowed`, numbers by value (1 == 1.0) but never a bool for a number or the reverse."""
    def number(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    return any(value == a if number(a) and number(value) else (value is a or (type(value) is type(a) and value == a))
               for a in allowed)


def _full(raw: Any, defaults: dict, file: Path, class_name: str) -> dict:
    """`raw` over `defaults`; refuses a non-object, another class and keys diffusers' class does not have."""
    if not isinstance(raw, dict):
        raise CheckpointFileError(file, "not a JSON object")
    if raw.get("_class_name", class_name) != class_name:
        raise refusal(file, "_class_name", raw["_class_name"], f'"{class_name}"')
    unknown = sorted(k for k in raw if not k.startswith("_") and k not in defaults)
    if unknown:
        raise CheckpointFileError(file, f"unknown key {unknown[0]!r} for {class_name}; known: {', '.join(defaults)}")
    return {**defaults, **{k: v for k, v in raw.items() if not k.startswith("_")}}


@dataclass
class UNetSpec:
    """The UNet2DModel of a config.json in ddpmkit's terms; `attn_levels` are the level indices with attention."""

    in_channels: int
    out_channels: int
    image_size: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_levels: tuple[int, ...]
    dropout: float
    num_groups: int

    def unet_kwargs(self) -> dict:
        """ddpmkit UNet constructor keywords."""
        return {"in_channels": self.in_channels, "out_channels": self.out_channels, "ch": self.ch,
                "ch_mult": self.ch_mult, "num_res_blocks": self.num_res_blocks, "dropout": self.dropout,
                "attn_resolutions": tuple(self.image_size // 2**i for i in self.attn_levels),
                "image_size": self.image_size, "num_groups": self.num_groups}


def _int(c: dict, key: str, file: Path, minimum: int = 1) -> int:
    v = c[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise CheckpointFileError(file, f"{key} = {json.dumps(v)}: expected an integer >= {minimum}")
    return v


def _levels(c: dict, file: Path) -> tuple[list[int], tuple[int, ...]]:
    """block_out_channels and the levels with attention, with the up path checked to mirror the down path."""
    down, up, widths = c["down_block_types"], c["up_block_types"], c["block_out_channels"]
    if not (isinstance(down, list) and isinstance(up, list) and isinstance(widths, list)):
        raise CheckpointFileError(file, "down_block_types, up_block_types and block_out_channels must be lists")
    if not down or len(up) != len(down) or len(widths) != len(down):
        raise CheckpointFileError(file, f"{len(down)} down_block_types, {len(up)} up_block_types and "
                                        f"{len(widths)} block_out_channels: expected the same number, at least 1")
    for key, kinds, i in [("down_block_types", down, i) for i in range(len(down))] + \
                         [("up_block_types", up, i) for i in range(len(up))]:
        names = ("DownBlock2D", "AttnDownBlock2D") if key == "down_block_types" else ("UpBlock2D", "AttnUpBlock2D")
        if kinds[i] not in names:
            raise refusal(file, f"{key}[{i}]", kinds[i], " or ".join(f'"{n}"' for n in names))
    attn = tuple(i for i, kind in enumerate(down) if kind == "AttnDownBlock2D")
    for j, kind in enumerate(up):
        level = len(down) - 1 - j
        if (kind == "AttnUpBlock2D") != (level in attn):
            want = "AttnUpBlock2D" if level in attn else "UpBlock2D"
            raise refusal(file, f"up_block_types[{j}]", kind, f'"{want}" (the up path mirrors the down path: '
                                                              f"down_block_types[{level}] is {down[level]})")
    if not all(isinstance(w, int) and not isinstance(w, bool) and w > 0 for w in widths):
        raise CheckpointFileError(file, f"block_out_channels = {json.dumps(widths)}: expected positive integers")
    return widths, attn


def read_unet_config(raw: Any, file: Path) -> UNetSpec:
    """A UNetSpec from a UNet2DModel config.json, or a CheckpointFileError naming what ddpmkit cannot express."""
    c = _full(raw, UNET_DEFAULTS, file, "UNet2DModel")
    for key, (allowed, supported) in _UNET_FIXED.items():
        if not _same(c[key], allowed):
            raise refusal(file, key, c[key], supported)
    widths, attn = _levels(c, file)
    ch = widths[0]
    if ch < 4 or any(w % ch for w in widths):
        raise refusal(file, "block_out_channels", widths, "multiples of the first entry (ch * ch_mult), ch >= 4")
    if c["time_embedding_dim"] not in (None, 4 * ch):
        raise refusal(file, "time_embedding_dim", c["time_embedding_dim"], f"null or {4 * ch} (4 * ch)")
    heads = {widths[i] for i in attn} | {widths[-1]}  # each attention's channels, the middle block's included
    if c["attention_head_dim"] is not None and {c["attention_head_dim"]} != heads:
        raise refusal(file, "attention_head_dim", c["attention_head_dim"],
                      f"null or {sorted(heads)[0]}: one attention head over all channels" if len(heads) == 1 else
                      "null: one attention head over all channels")
    groups = _int(c, "norm_num_groups", file)
    if c["attn_norm_num_groups"] not in (None, groups):
        raise refusal(file, "attn_norm_num_groups", c["attn_norm_num_groups"], f"null or {groups} (norm_num_groups)")
    size = c["sample_size"]
    size = size[0] if isinstance(size, list) and len(size) == 2 and size[0] == size[1] else size
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise refusal(file, "sample_size", c["sample_size"], "a positive integer (square images)")
    channels = c["in_channels"]
    if channels not in (1, 3) or isinstance(channels, bool):
        raise refusal(file, "in_channels", channels, "1 (grey) or 3 (RGB)")
    if c["out_channels"] != channels:
        raise refusal(file, "out_channels", c["out_channels"], f"{channels} (= in_channels: a prediction shaped "
                                                               "like x_t; learned variances are not mapped)")
    dropout = c["dropout"]
    if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
        raise refusal(file, "dropout", dropout, "a number in [0, 1)")
    return UNetSpec(channels, channels, size, ch, tuple(w // ch for w in widths), _int(c, "layers_per_block", file),
                    attn, float(dropout), groups)


def _diffusers_cosine(timesteps: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' "squaredcos_cap_v2" betas as it computes them: float64 ratios, then float32 [IDDPM Eq. 17]."""
    f = [math.cos((i / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2 for i in range(timesteps + 1)]
    return np.array([min(1 - f[i + 1] / f[i], max_beta) for i in range(timesteps)], dtype=np.float32)


def _schedule(c: dict, timesteps: int, file: Path) -> dict:
    """The [diffusion] schedule keys for the scheduler's betas."""
    betas = c["trained_betas"]
    if betas is not None:
        try:
            arr = np.asarray(betas, dtype=np.float64)
        except (TypeError, ValueError):
            raise CheckpointFileError(file, "trained_betas: expected a list of numbers") from None
        if arr.shape != (timesteps,):
            raise CheckpointFileError(file, f"trained_betas has {arr.size} entries, num_train_timesteps is {timesteps}")
        if 0 < arr[0] < 1 and 0 < arr[-1] < 1 and np.array_equal(arr, np.linspace(arr[0], arr[-1], timesteps)):
            return {"schedule": "linear", "beta_start": float(arr[0]), "beta_end": float(arr[-1])}
        if np.array_equal(arr, schedules.cosine(timesteps)):
            return {"schedule": "cosine"}
        raise refusal(file, "trained_betas", f"[{arr[0]!r}, ..., {arr[-1]!r}]", "betas equal in float64 to the "
                      "linear schedule from their first to their last value or to the cosine schedule")
    name = c["beta_schedule"]
    if name == "linear":
        for key in ("beta_start", "beta_end"):
            if not isinstance(c[key], (int, float)) or isinstance(c[key], bool) or not 0 < c[key] < 1:
                raise CheckpointFileError(file, f"{key} = {json.dumps(c[key])}: expected a number in (0, 1)")
        return {"schedule": "linear", "beta_start": float(c["beta_start"]), "beta_end": float(c["beta_end"])}
    if name == "squaredcos_cap_v2" and np.array_equal(_diffusers_cosine(timesteps),
                                                      schedules.cosine(timesteps).astype(np.float32)):
        return {"schedule": "cosine"}
    raise refusal(file, "beta_schedule", name, '"linear" or "squaredcos_cap_v2" (or trained_betas)')


def read_scheduler_config(raw: Any, file: Path) -> dict:
    """The run's [diffusion] section from a DDPMScheduler scheduler_config.json, or a CheckpointFileError."""
    c = _full(raw, SCHEDULER_DEFAULTS, file, "DDPMScheduler")
    for key, (allowed, supported) in _SCHEDULER_FIXED.items():
        if not _same(c[key], allowed):
            raise refusal(file, key, c[key], supported)
    timesteps = _int(c, "num_train_timesteps", file)
    if c["variance_type"] not in _VARIANCE:
        why = {"learned_range": " (ddpmkit clamps the learned v to [-1, 1], diffusers does not)",
               "learned": " (diffusers' \"learned\" output is sigma^2; ddpmkit's, as the authors', is log sigma^2)",
               }.get(str(c["variance_type"]), "")
        raise refusal(file, "variance_type", c["variance_type"], f"{', '.join(map(json.dumps, _VARIANCE))}{why}")
    if c["prediction_type"] not in _PREDICTION:
        raise refusal(file, "prediction_type", c["prediction_type"], ", ".join(map(json.dumps, _PREDICTION)))
    return {**_schedule(c, timesteps, file), "timesteps": timesteps, "parameterization": _PREDICTION[
        c["prediction_type"]], "variance": _VARIANCE[c["variance_type"]]}


# ---------------------------------------------------------------- export: ddpmkit -> diffusers


def unet_config_for(spec: UNetSpec) -> dict:
    """The UNet2DModel config.json that builds ddpmkit's network `spec` exactly."""
    levels = len(spec.ch_mult)
    down = ["AttnDownBlock2D" if i in spec.attn_levels else "DownBlock2D" for i in range(levels)]
    up = ["AttnUpBlock2D" if i in spec.attn_levels else "UpBlock2D" for i in reversed(range(levels))]
    return {"_class_name": "UNet2DModel", **UNET_DEFAULTS, "sample_size": spec.image_size,
            "in_channels": spec.in_channels, "out_channels": spec.out_channels, "freq_shift": 1,
            "flip_sin_to_cos": False, "down_block_types": down, "up_block_types": up,
            "block_out_channels": [spec.ch * m for m in spec.ch_mult], "layers_per_block": spec.num_res_blocks,
            "downsample_padding": 0, "dropout": spec.dropout, "attention_head_dim": None,
            "norm_num_groups": spec.num_groups, "norm_eps": 1e-6}


def scheduler_config_for(diffusion: dict, source: str) -> dict:
    """The DDPMScheduler scheduler_config.json for a run's [diffusion] section; betas passed exactly."""
    if diffusion["variance"] not in ("fixed_small", "fixed_large"):
        why = {"learned": "diffusers' variance_type \"learned\" reads the output as sigma^2, ddpmkit's is log sigma^2"
               }.get(diffusion["variance"], "diffusers' learned_range does not clamp v to [-1, 1] as ddpmkit does")
        raise CheckpointFileError(Path(source), f"diffusion.variance = {diffusion['variance']!r} cannot be exported "
                                  f"exactly: {why}")
    if diffusion["parameterization"] not in _PREDICTION.values():
        raise CheckpointFileError(Path(source), f"diffusion.parameterization = {diffusion['parameterization']!r} "
                                  "cannot be exported: diffusers has no prediction_type for the posterior mean mu~_t; "
                                  f"supported: {', '.join(sorted(_PREDICTION.values()))}")
    timesteps = diffusion["timesteps"]
    if diffusion["schedule"] == "linear":
        beta = schedules.linear(timesteps, diffusion["beta_start"], diffusion["beta_end"])
        named = {"beta_schedule": "linear", "beta_start": diffusion["beta_start"], "beta_end": diffusion["beta_end"]}
    else:
        beta = schedules.get(diffusion["schedule"], timesteps)
        named = {"beta_schedule": "squaredcos_cap_v2"}
    prediction = {v: k for k, v in _PREDICTION.items()}[diffusion["parameterization"]]
    return {"_class_name": "DDPMScheduler", **SCHEDULER_DEFAULTS, **named, "num_train_timesteps": timesteps,
            "trained_betas": [float(b) for b in beta],  # float64 exactly (JSON keeps 17 digits); diffusers uses these
            "variance_type": diffusion["variance"], "prediction_type": prediction, "clip_sample": True,
            "clip_sample_range": 1.0}
