"""Run configuration: one dataclass per component, composed into RunConfig, loaded from and saved as TOML.

Presets are TOML files shipped in `ddpmkit/configs/` (`configs/` at the top of the repository points there):
`digits` (the default), `fashion_mnist`, `cifar10` (the paper's exact setup [DDPM Sec. 4, App. B]), `celebahq256` and
`lsun256` (the paper's 256x256 setups, the 114M network) and
`cifar10_improved` (Improved DDPM's CIFAR-10 recipe [IDDPM]).
Every value is validated in `__post_init__`; a bad one raises ConfigError with what is wrong and what is allowed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


def _choice(section: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name} = {value!r} is not allowed; choose one of {sorted(allowed)}")


def _positive(section: str, name: str, value, *, zero_ok: bool = False, integer: bool = True) -> None:
    kind = (int,) if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and (value >= 0 if zero_ok else value > 0)
    if not ok or (not integer and not math.isfinite(value)):
        what = "an integer" if integer else "a number"
        raise ConfigError(f"{section}.{name} = {value!r}: must be {what} {'>= 0' if zero_ok else '> 0'}")


@dataclass
class DataConfig:
    """Where the images come from (see ddpmkit.data.load_dataset) and how they are augmented."""

    spec: str = "digits"
    image_size: int | None = None  # resize + centre-crop to this size; None keeps the data's own size
    channels: int | None = None  # 1 (grey) or 3 (RGB); None: what most files are
    hflip: bool = False  # random horizontal flips, as the paper's CIFAR-10 run [DDPM App. B]
    skip_bad: bool = False

    def __post_init__(self):
        if self.image_size is not None:
            _positive("data", "image_size", self.image_size)
        if self.channels is not None:
            _choice("data", "channels", self.channels, {1, 3})


@dataclass
class DiffusionConfig:
    """The noise schedule and the reverse process [DDPM Sec. 2-3; IDDPM Sec. 3]."""

    schedule: str = "linear"
    timesteps: int = 1000
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02
    parameterization: str = "eps"
    variance: str = "fixed_large"

    def __post_init__(self):
        _choice("diffusion", "schedule", self.schedule, {"linear", "cosine"})
        _positive("diffusion", "timesteps", self.timesteps)
        _choice("diffusion", "parameterization", self.parameterization, {"eps", "x0", "v", "xprev"})
        _choice("diffusion", "variance", self.variance, {"fixed_small", "fixed_large", "learned", "learned_range"})
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0 < value < 1):
                raise ConfigError(f"diffusion.{name} = {value!r}: must lie in (0, 1)")


@dataclass
class ModelConfig:
    """A U-Net preset (ddpmkit.models) and overrides of its options; None keeps the preset's value."""

    preset: str = "digits"
    ch: int | None = None
    ch_mult: list[int] | None = None
    num_res_blocks: int | None = None
    attn_resolutions: list[int] | None = None
    dropout: float | None = None
    num_groups: int | None = None  # GroupNorm groups (32 in the paper); an imported diffusers net may set another
    # class-conditional with this many classes (a class embedding, [CFG]); None: unconditional, as the paper.
    # `ddpm train --conditional` sets it from the labels of the data.
    num_classes: int | None = None

    def __post_init__(self):
        if self.num_classes is not None:
            _positive("model", "num_classes", self.num_classes)
        if self.dropout is not None and not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ConfigError(f"model.dropout = {self.dropout!r}: must lie in [0, 1)")
        for name in ("ch", "num_res_blocks", "num_groups"):
            if getattr(self, name) is not None:
                _positive("model", name, getattr(self, name))

    def overrides(self) -> dict:
        """The options set here, to pass to UNet.from_preset."""
        out = {k: v for k, v in asdict(self).items() if k != "preset" and v is not None}
        return {k: tuple(v) if isinstance(v, list) else v for k, v in out.items()}


@dataclass
class TrainConfig:
    """Algorithm 1 and the optimiser around it [DDPM Sec. 4, App. B]."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 100  # linear LR warm-up steps (the paper: 5000)
    grad_clip: float = 1.0  # clip the global gradient norm; 0 disables
    ema_decay: float = 0.9999
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) so short runs get a useful EMA
    loss: str = "simple"
    hybrid_lambda: float = 1e-3  # weight of L_vlb in loss = "hybrid" [IDDPM Sec. 3.1]
    timestep_sampler: str = "auto"  # auto: importance-sampled t for loss = "vlb" [IDDPM Sec. 3.3], else uniform
    precision: str = "auto"  # auto: bf16 autocast where the device has native bf16 (ddpmkit.precision), else fp32
    compile: bool = False
    channels_last: bool = False
    grad_checkpoint: bool = False  # recompute each block's activations in the backward pass: less memory, slower
    seed: int = 0
    log_every: int = 50
    checkpoint_every: int = 1000
    sample_every: int = 1000
    keep_checkpoints: int = 3
    num_samples: int = 64  # images in each sample grid
    max_bad_losses: int = 3  # stop after this many non-finite losses in a row
    label_dropout: float = 0.1  # conditional runs: share of labels replaced by the "no class" token [CFG Sec. 4]
    # evaluation during training (train/periodic_eval.py): every eval_every steps (0: off), eval_n EMA samples
    # against as many training images, eval_metrics of kid/fid/pr in eval_features ("inception" with
    # $DDPMKIT_INCEPTION, "inception:PATH", or a classifier from ddpm train-classifier); to metrics.jsonl and
    # TensorBoard
    eval_every: int = 0
    eval_n: int = 1000
    eval_metrics: list = field(default_factory=lambda: ["kid"])
    eval_features: str = "inception"
    # issue 18: a run planned to end within budget_s seconds (`ddpm train --minutes`; train/budget.py), and the
    # schedules it uses: LR decay after warm-up (train/lr_schedule.py), the power-function EMA (train/power_ema.py),
    # min-SNR-gamma weighting of L_simple (train/weighting.py). The defaults keep the paper's recipe.
    budget_s: float | None = None
    lr_decay: str = "none"  # none | cosine | linear, to 0 at train.steps
    ema_schedule: str = "exponential"  # exponential (ema_decay, ema_warmup) | power [EDM2]
    ema_sigma_rel: float = 0.10  # power EMA: the profile's length relative to the run [EDM2 Eq. 3]
    loss_weighting: str = "none"  # none (L_simple) | min_snr [MinSNR]
    min_snr_gamma: float = 5.0

    def __post_init__(self):
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
                     "num_samples", "max_bad_losses"):
            _positive("train", name, getattr(self, name))
        _positive("train", "sample_every", self.sample_every, zero_ok=True)  # 0: no sample grids, not even the last
        _positive("train", "warmup", self.warmup, zero_ok=True)
        _positive("train", "lr", self.lr, integer=False)
        _positive("train", "hybrid_lambda", self.hybrid_lambda, integer=False)
        _positive("train", "grad_clip", self.grad_clip, zero_ok=True, integer=False)
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ConfigError(f"train.ema_decay = {self.ema_decay!r}: must lie in [0, 1)")
        _choice("train", "loss", self.loss, {"simple", "kl", "vlb", "hybrid"})
        _choice("train", "timestep_sampler", self.timestep_sampler, {"auto", "uniform", "importance"})
        if self.timestep_sampler == "importance" and self.loss != "vlb":
            raise ConfigError(f"train.timestep_sampler = 'importance' needs train.loss = 'vlb', not {self.loss!r}: "
                              "importance sampling of t is for the bound alone [IDDPM Sec. 3.3]; use 'uniform'")
        _choice("train", "precision", self.precision, {"auto", "fp32", "bf16", "fp16"})
        _positive("train", "seed", self.seed, zero_ok=True)
        if not (isinstance(self.label_dropout, (int, float)) and 0 <= self.label_dropout < 1):
            raise ConfigError(f"train.label_dropout = {self.label_dropout!r}: must lie in [0, 1) (0.1 is the CFG "
                              "paper's; 0 trains no unconditional model, so guidance would be meaningless)")
        self.eval_metrics = _eval_metrics(self)  # a list of names, also from --set train.eval_metrics=kid,fid
        self._check_budget_fields()

    def _check_budget_fields(self) -> None:
        if self.budget_s is not None:
            _positive("train", "budget_s", self.budget_s, integer=False)
        _choice("train", "lr_decay", self.lr_decay, {"none", "cosine", "linear"})
        _choice("train", "ema_schedule", self.ema_schedule, {"exponential", "power"})
        if not (isinstance(self.ema_sigma_rel, (int, float)) and 0 < self.ema_sigma_rel < 0.28):
            raise ConfigError(f"train.ema_sigma_rel = {self.ema_sigma_rel!r}: must lie in (0, 0.28) (0.05-0.2 "
                              "are usual [EDM2])")
        _choice("train", "loss_weighting", self.loss_weighting, {"none", "min_snr"})
        _positive("train", "min_snr_gamma", self.min_snr_gamma, integer=False)
        if self.loss_weighting != "none" and self.loss != "simple":
            raise ConfigError(f"train.loss_weighting = {self.loss_weighting!r} weighs L_simple: it needs "
                              f"train.loss = 'simple', not {self.loss!r}")


EVAL_METRICS = ("kid", "fid", "pr")  # what train.eval_metrics may name


def _eval_metrics(c: "TrainConfig") -> list[str]:
    """train.eval_every / eval_n / eval_features checked, and train.eval_metrics (a list or "kid,fid") as a list."""
    _positive("train", "eval_every", c.eval_every, zero_ok=True)
    _positive("train", "eval_n", c.eval_n)
    names = c.eval_metrics.split(",") if isinstance(c.eval_metrics, str) else c.eval_metrics
    if not isinstance(names, (list, tuple)) or not names or not all(isinstance(m, str) for m in names):
        raise ConfigError(f"train.eval_metrics = {c.eval_metrics!r}: give a list of {', '.join(EVAL_METRICS)}")
    names = [m.strip() for m in names]
    for name in names:
        _choice("train", "eval_metrics", name, set(EVAL_METRICS))
    need = 4 if "pr" in names else 2  # k + 1 neighbours for pr (k = 3); two vectors for a covariance or MMD^2_u
    if c.eval_n < need:
        raise ConfigError(f"train.eval_n = {c.eval_n}: {','.join(names)} need at least {need} samples")
    if not isinstance(c.eval_features, str) or not c.eval_features.strip():
        raise ConfigError(f"train.eval_features = {c.eval_features!r}: give 'inception' (with $DDPMKIT_INCEPTION), "
                          "'inception:PATH', or the path of a classifier from ddpm train-classifier")
    return names


@dataclass
class SampleConfig:
    """The sampler of the sample grids, `ddpm sample` and `ddpm eval` (see ddpmkit.samplers for the list).

    ancestral [DDPM Alg. 2], ddim [DDIM Eq. 12], dpm++2m / dpm++3m / dpm++2m-sde [DPM-Solver++], heun [EDM Alg. 1];
    spacing of the nodes: uniform | logsnr | karras (samplers/spacing.py)."""

    sampler: str = "ancestral"
    steps: int | None = None  # None: all T steps
    eta: float = 0.0  # ddim only
    spacing: str | None = None  # None: the sampler's own (uniform for ancestral/ddim, logsnr dpm++*, karras heun)
    precision: str = "auto"  # the network while sampling: auto (bf16 where native, ddpmkit.precision), fp32, bf16, fp16

    def __post_init__(self):
        from .samplers.loop import SAMPLERS
        from .samplers.spacing import SPACINGS

        _choice("sample", "sampler", self.sampler, set(SAMPLERS))
        _choice("sample", "precision", self.precision, {"auto", "fp32", "bf16", "fp16"})
        if self.spacing is not None:
            _choice("sample", "spacing", self.spacing, set(SPACINGS))
        if self.steps is not None:
            _positive("sample", "steps", self.steps)
        if not (isinstance(self.eta, (int, float)) and self.eta >= 0):
            raise ConfigError(f"sample.eta = {self.eta!r}: must be >= 0")
        if self.eta != 0 and not SAMPLERS[self.sampler].uses_eta:
            raise ConfigError(f"sample.eta = {self.eta!r} is for sample.sampler = 'ddim' only, not "
                              f"{self.sampler!r}: set it to 0")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self):
        if self.sample.steps is not None and self.sample.steps > self.diffusion.timesteps:
            T = self.diffusion.timesteps
            raise ConfigError(f"sample.steps = {self.sample.steps} is more than diffusion.timesteps = {T}: "
                              f"lower it (e.g. --set sample.steps={T})")
        from .samplers.loop import check_sampler

        check_sampler(self.sample.sampler, self.sample.steps, self.diffusion.timesteps, option="sample.sampler")
        from .parameterization import check_modes

        check_modes(self.diffusion.variance, self.train.loss, self.diffusion.parameterization,
                    self.train.loss_weighting)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "RunConfig":
        """Build from nested dicts; unknown sections or keys are refused with the allowed names."""
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: expected a table of sections")
        parts = {}
        for f in fields(cls):
            section = raw.get(f.name, {})
            known = {g.name for g in fields(f.default_factory)}
            unknown = set(section) - known
            if unknown:
                raise ConfigError(f"{source}: unknown key {f.name}.{sorted(unknown)[0]}; known: {sorted(known)}")
            parts[f.name] = f.default_factory(**section)
        extra = set(raw) - {f.name for f in fields(cls)}
        if extra:
            raise ConfigError(f"{source}: unknown section [{sorted(extra)[0]}]; known: {[f.name for f in fields(cls)]}")
        return cls(**parts)

    def replace(self, key: str, value: Any) -> "RunConfig":
        """A copy with `section.name` set to value (validated)."""
        return self.with_values({key: value})

    def with_values(self, values: dict[str, Any], source: str = "--set") -> "RunConfig":
        """A copy with every `section.name` of `values` set, validated once all are in place (so that
        --set diffusion.timesteps=20 --set sample.steps=10 is checked as a whole)."""
        raw = self.to_dict()
        for key, value in values.items():
            section, _, name = key.partition(".")
            if section not in raw or not name or name not in raw[section]:
                known = [f"{s}.{k}" for s, d in raw.items() for k in d]
                raise ConfigError(f"{source} {key}: unknown key; known keys: {', '.join(known)}")
            raw[section][name] = value
        return RunConfig.from_dict(raw, source=f"{source} {', '.join(values)}")


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_config(path_or_name: str | Path | None = None) -> RunConfig:
    """A preset by name (digits, fashion_mnist, cifar10, ...) or a TOML file; None gives the digits preset."""
    name = "digits" if path_or_name is None else str(path_or_name)
    path = Path(name)
    if not path.suffix and not path.exists():
        path = PRESET_DIR / f"{name}.toml"
        if not path.exists():
            raise ConfigError(f"--config {name}: no such file or preset; presets: {', '.join(preset_names())}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"--config {path}: cannot be read as TOML ({err})") from None
    return RunConfig.from_dict(raw, source=str(path))


def parse_value(text: str) -> Any:
    """A --set value as TOML (numbers, true/false, [lists], "strings"), else as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def to_toml(config: RunConfig) -> str:
    """The config as TOML; None values (meaning "default") are left out, which TOML cannot spell."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


# What may change when a run is resumed: everything else must match the checkpoint's config (or --force).
RESUMABLE_CHANGES = {"train.steps", "train.log_every", "train.checkpoint_every", "train.sample_every",
                     "train.keep_checkpoints", "train.num_samples", "train.max_bad_losses", "train.compile",
                     "train.channels_last", "train.precision", "sample.sampler", "sample.steps", "sample.eta",
                     "sample.spacing", "data.skip_bad",
                     "train.eval_every", "train.eval_n", "train.eval_metrics", "train.eval_features",
                     "train.budget_s", "sample.precision", "train.grad_checkpoint"}


def config_differences(old: dict, new: dict) -> list[str]:
    """'section.key: old -> new' for each value that differs and may not change on resume."""
    diffs, defaults = [], RunConfig().to_dict()
    for section in sorted(set(old) | set(new)):
        # a key that an older ddpmkit did not write (e.g. train.timestep_sampler) had its default value
        a, b = {**defaults.get(section, {}), **old.get(section, {})}, new.get(section, {})
        for key in sorted(set(a) | set(b)):
            name = f"{section}.{key}"
            if a.get(key) != b.get(key) and name not in RESUMABLE_CHANGES:
                diffs.append(f"{name}: {a.get(key)!r} -> {b.get(key)!r}")
    return diffs


__all__ = ["RunConfig", "DataConfig", "DiffusionConfig", "ModelConfig", "TrainConfig", "SampleConfig",
           "load_config", "parse_value", "to_toml", "config_differences", "preset_names"]
