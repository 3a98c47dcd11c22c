"""`ddpm train --minutes M`: plan a run that ends within a wall-clock budget with the best model this machine reaches.

The plan, made when the run starts and counted in the budget:
  1. probe   time a few training steps of each candidate network (`candidates`: a ladder of U-Nets sized to the
             images, cheapest first) at the planned batch, and the sample grid's network calls; stop probing at the
             first candidate too slow to reach MIN_STEPS in the time left.
  2. choose  the largest candidate that still gets MIN_STEPS steps (the rule fitted to bench/budget.py's sweep,
             docs/RESULTS.md "Training to a budget"); the recipe around it: batch BATCH, Adam at LR, a linear
             warm-up over WARMUP_FRAC of the steps, cosine decay to 0 at the last step (train/lr_schedule.py), the
             power-function EMA with sigma_rel EMA_SIGMA_REL (train/power_ema.py), L_simple with min-SNR-gamma
             weights (WEIGHTING, train/weighting.py), sample grids and checkpoints at each quarter of the run.
  3. run     the trainer re-measures its step rate as it goes (`BudgetClock`): every REPLAN_EVERY of the run it
             moves the last step so that training, the grids left and the final checkpoint end at the deadline
             (the machine may be shared), and it stops early rather than late.
Values the user sets (flags, --set, `fixed`) are kept: the planner chooses only the others.
`--resume` with a new budget continues the same run: the saved network and recipe, and the steps that fit the new
budget added to the step it resumes from (the decay is stretched to the new end).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import torch

from ..config import RunConfig, load_config
from ..errors import UserError
from .autoconfig import format_duration, sized_model

# The rule (bench/budget.py's sweep on digits, 300 steps of the smallest network, docs/RESULTS.md "Training to a
# budget"): at equal time the smallest network won (FD 20.4 against 26.2 for ch32x1 and 36.4 for ch32x2); Adam 2e-3
# beat 1e-3 and 5e-4 (12.3, 20.4, 38.5); warm-up 5% or 20%, batch 32 or 64 (at equal time) and sigma_rel 0.1 or 0.2
# were within a few FD of each other. MIN_STEPS, where a larger network starts to pay, was not reached by the sweep:
# 1500 is a prior (the digits preset's steps), not a fit. On Fashion-MNIST at 15 minutes of one core (the second
# sweep, docs/RESULTS.md) the smallest network (3784 steps) beat ch32x1 (1358 steps) too, FID 67.0 against 82.5,
# and min-SNR-gamma weighting (gamma 5) beat uniform L_simple (48.8 against 67.0; v-prediction 54.0): the third
# comparison of the three made where it won, so planned runs weight the loss by it. The presets keep the paper's
# uniform L_simple.
MIN_STEPS = 1500
BATCH = 64
LR = 2e-3
WARMUP_FRAC = 0.05
EMA_SIGMA_REL = 0.10
WEIGHTING = "min_snr"  # train.loss_weighting of a planned run (train.min_snr_gamma keeps its default, 5)
GRIDS = 4  # at most this many sample grids (and checkpoints), evenly spaced; the last one is the final grid
GRID_SHARE = 0.05  # ... and fewer when they would take more than this share of the budget (at least the final one)
PROBE_STEPS = 3  # timed steps per candidate, after one untimed step
PROBE_SHARE = 0.15  # the probe stops once it has used this share of the budget
SAFETY = 0.02  # the plan ends this share of the budget (at least 1 s) before the deadline
REPLAN_EVERY = 0.05  # re-measure and move the last step at every 5% of the planned steps


@dataclass
class Candidate:
    """A network the planner may pick: model.* values over the preset."""

    name: str
    model: dict


def candidates(image_size: int) -> list[Candidate]:
    """U-Nets for images of this size, cheapest first: the levels of `sized_model`, attention at the smallest
    level only (7x7 of 28: 49 tokens, where 14x14 would cost 16 times the attention), no dropout (a run of minutes
    does not overfit), and widths (ch) 16, 32, 64 with 1 or 2 res blocks per level."""
    ch_mult = sized_model(image_size)["model.ch_mult"]
    attn = [image_size // 2 ** (len(ch_mult) - 1)]
    ladder = [(16, 1), (32, 1), (32, 2), (64, 1), (64, 2)]
    return [Candidate(f"ch{ch}x{nrb}", {"model.ch": ch, "model.ch_mult": ch_mult, "model.num_res_blocks": nrb,
                                         "model.attn_resolutions": attn, "model.dropout": 0.0})
            for ch, nrb in ladder]


def _grid_count(budget_s: float, timing: "Timing") -> int:
    """How many sample grids the run draws: GRIDS, or as many as fit in GRID_SHARE of the budget, at least 1."""
    if timing.grid_s <= 0:
        return GRIDS
    return max(1, min(GRIDS, int(GRID_SHARE * budget_s / timing.grid_s)))


def _recipe(steps: int, grids: int = GRIDS, weighting: str | None = None) -> dict:
    """train.* values the rule gives a run of `steps` steps with `grids` sample grids (loss weighting: WEIGHTING
    unless given)."""
    every = max(1, steps // grids)
    weighting = WEIGHTING if weighting is None else weighting
    return {"train.batch_size": BATCH, "train.lr": LR, "train.warmup": max(1, round(WARMUP_FRAC * steps)),
            "train.lr_decay": "cosine", "train.ema_schedule": "power", "train.ema_sigma_rel": EMA_SIGMA_REL,
            "train.loss_weighting": weighting, "train.sample_every": every, "train.checkpoint_every": every}


def _weighting(config: RunConfig) -> str:
    """WEIGHTING where it applies (parameterization.min_snr_applies: L_simple of an eps, x0 or v network); any other
    objective (train.loss kl, vlb, hybrid) or prediction (xprev) keeps its own, unweighted."""
    from ..parameterization import min_snr_applies

    return WEIGHTING if min_snr_applies(config.train.loss, config.diffusion.parameterization) else "none"


@dataclass
class Timing:
    step_s: float  # seconds per training step
    grid_s: float  # seconds per sample grid
    params: int


@dataclass
class Plan:
    """What was chosen and when it ends; `steps` is the number of steps the budget holds from the start step."""

    config: RunConfig
    steps: int
    timing: Timing
    started: float  # time.monotonic() when the budget began
    budget_s: float
    probed: list[tuple[str, Timing]] = field(default_factory=list)
    candidate: str = "resumed run"
    precision_note: str = ""  # why the plan set train.precision / sample.precision ("" when it did not)

    @property
    def deadline(self) -> float:
        return self.started + self.budget_s

    def reserve_s(self, grids_left: int) -> float:
        """Time kept for the sample grids still to come and the final checkpoint."""
        return grids_left * self.timing.grid_s + _checkpoint_s(self.timing.params)


def _checkpoint_s(params: int) -> float:
    """A checkpoint writes the model, the EMA and Adam's two moments in fp32 (16 bytes a parameter) and checks them:
    1 s plus 100 MB/s, a slow disk's rate."""
    return 1.0 + 16 * params / 100e6


# --- the timing probe ----------------------------------------------------------------------------------------------

def _grid_nfe(config: RunConfig) -> int:
    s = config.sample
    steps = s.steps or config.diffusion.timesteps
    return 2 * steps if s.sampler == "heun" else steps


def probe(config: RunConfig, data, device: torch.device, steps: int = PROBE_STEPS) -> Timing:
    """Seconds per training step of the configured network on real images (forward, backward, clip, fused Adam,
    under the precision the config resolves to), and seconds per sample grid (its network calls at batch
    train.num_samples)."""
    from ..data import to_model_range
    from ..pipeline import build_diffusion, build_model
    from ..precision import decide  # the trainer's own precision choice, so the probe times what runs

    c = config.train
    torch.manual_seed(c.seed)
    model = build_model(config, data.image_size, data.channels).to(device)
    diffusion = build_diffusion(config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, fused=device.type in ("cpu", "cuda") or None)
    dtype = decide(c.precision, device).dtype
    idx = torch.arange(c.batch_size) % len(data)
    x0 = to_model_range(torch.from_numpy(data.images[idx.numpy()])).to(device)
    amp = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype is not None else _NoAutocast
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with amp():
            loss = diffusion.training_loss(model, x0).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), c.grad_clip or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    step_s = sum(times[1:]) / steps  # the first step allocates
    model.eval()
    with torch.no_grad(), amp():
        xt = torch.randn((c.num_samples, data.channels, data.image_size, data.image_size), device=device)
        t = torch.full((c.num_samples,), config.diffusion.timesteps - 1, device=device)
        start = time.perf_counter()
        model(xt, t)
        grid_s = (time.perf_counter() - start) * _grid_nfe(config) if c.sample_every else 0.0
    return Timing(step_s, grid_s, sum(p.numel() for p in model.parameters()))


class _NoAutocast:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --- the plan -----------------------------------------------------------------------------------------------------

def _steps_in(seconds: float, timing: Timing, grids: int) -> int:
    """Steps that fit in `seconds` with `grids` sample grids and one checkpoint on top."""
    left = seconds - grids * timing.grid_s - _checkpoint_s(timing.params)
    return max(0, int(left / timing.step_s))


def _with(config: RunConfig, values: dict, fixed) -> RunConfig:
    return config.with_values({k: v for k, v in values.items() if k not in fixed}, source="the budget plan")


def plan_run(config: RunConfig, data, device: torch.device, *, started: float, fixed=(), say=print,
             resumed: bool = False) -> Plan:
    """Probe, choose and return the plan for `config.train.budget_s` seconds from `started` (time.monotonic())."""
    budget = float(config.train.budget_s)
    if resumed:  # the saved network and recipe: only the number of steps is planned
        timing = probe(config, data, device)
        return _finish(config, timing, started, budget, [("resumed network", timing)], "resumed run", fixed,
                       resumed=True)
    base = _with(config, _recipe(1000, weighting=_weighting(config)), fixed)
    ladder = candidates(data.image_size) if not any(k.startswith("model.") for k in fixed) else \
        [Candidate("your network", {})]
    both = _times_both_precisions(base, device, fixed)
    probed, chosen = [], None
    for cand in ladder:
        if both:  # bf16 does not pay for every network (docs/PERFORMANCE.md): time both, keep the faster
            timings = {p: probe(_with(base, {**cand.model, "train.precision": p}, fixed), data, device)
                       for p in ("bf16", "fp32")}
            probed += [(f"{cand.name} {p}", t) for p, t in timings.items()]
            train_p = min(timings, key=lambda p: timings[p].step_s)
            sample_p = min(timings, key=lambda p: timings[p].grid_s)
            timing = timings[train_p]
            values = {**cand.model, "train.precision": train_p, "sample.precision": sample_p}
            note = (f"training in {train_p} (fp32 {timings['fp32'].step_s:.3f}, bf16 {timings['bf16'].step_s:.3f} "
                    f"s/step), sampling in {sample_p} (a grid: fp32 {timings['fp32'].grid_s:.1f}, bf16 "
                    f"{timings['bf16'].grid_s:.1f} s): precision auto, timed for this network")
        else:
            timing = probe(_with(base, cand.model, fixed), data, device)
            probed.append((cand.name, timing))
            values, note = cand.model, ""
        left = started + budget - time.monotonic() - SAFETY * budget
        fits = _steps_in(left, timing, _grid_count(budget, timing)) >= MIN_STEPS
        if chosen is None or fits:
            chosen = (cand, timing, values, note)
        if not fits or time.monotonic() - started > PROBE_SHARE * budget:
            break  # larger networks get fewer steps still
    cand, timing, values, note = chosen
    plan = _finish(_with(base, values, fixed), timing, started, budget, probed, cand.name, fixed)
    plan.precision_note = note
    return plan


def _times_both_precisions(config: RunConfig, device: torch.device, fixed) -> bool:
    """A planned run with precision auto where auto means bf16: the probe times each candidate in bf16 and in fp32
    and the plan writes the faster into the run's config (so `--resume` trains in the same precision, bit for bit).
    Elsewhere `auto` is decided by capability alone (ddpmkit/precision.py)."""
    from ..precision import decide

    return ("train.precision" not in fixed and config.train.precision == "auto"
            and decide("auto", device).name == "bf16")


def _finish(config, timing, started, budget, probed, name, fixed, resumed: bool = False) -> Plan:
    left = started + budget * (1.0 - SAFETY) - time.monotonic()
    grids = _grid_count(budget, timing) if config.train.sample_every else 0
    steps = _steps_in(min(left, budget - 1.0), timing, grids)
    if steps < 1:
        need = (time.monotonic() - started) + timing.step_s + grids * timing.grid_s + _checkpoint_s(timing.params)
        raise UserError(f"--minutes {budget / 60:g}: {budget:g} s is too short for one training step of the "
                        f"smallest network here ({name}: {timing.step_s:.2f} s a step, {time.monotonic() - started:.1f}"
                        f" s to plan, {timing.grid_s:.1f} s a sample grid); give at least --minutes "
                        f"{math.ceil(need * 1.5 / 6) / 10:g}")
    planned = ("train.sample_every", "train.checkpoint_every") if resumed else \
        [k for k in _recipe(1) if k != "train.batch_size"]
    keep = {k: v for k, v in _recipe(steps, max(grids, 1), _weighting(config)).items() if k in planned}
    keep["train.steps"] = steps
    return Plan(_with(config, keep, fixed), steps, timing, started, budget, probed, name)


def describe(plan: Plan, start_step: int) -> list[str]:
    """The lines printed before training: the probe, the network, the recipe, the expected end."""
    c = plan.config.train
    probe_line = ", ".join(f"{name} {t.step_s:.3f} s/step" for name, t in plan.probed)
    m = plan.config.model
    end = _wall_clock(plan.started + plan.budget_s * (1 - SAFETY))
    grids = f"a sample grid every {c.sample_every} steps ({plan.timing.grid_s:.1f} s each)" if c.sample_every \
        else "no sample grids"
    return [
        f"plan: budget {format_duration(plan.budget_s)}; probed in {time.monotonic() - plan.started:.1f} s: "
        f"{probe_line}",
        f"plan: network {plan.candidate} (ch={m.ch}, ch_mult={m.ch_mult}, num_res_blocks={m.num_res_blocks or 'preset'}, "
        f"attention at {m.attn_resolutions}), {plan.timing.params:,} parameters; batch {c.batch_size}",
        f"plan: steps {start_step} -> {start_step + plan.steps} at {plan.timing.step_s:.3f} s/step; lr {c.lr:g}, "
        f"warm-up {c.warmup} steps, {c.lr_decay} decay to 0; EMA {c.ema_schedule}"
        + (f" sigma_rel {c.ema_sigma_rel:g}" if c.ema_schedule == "power" else f" {c.ema_decay:g}")
        + (f"; L_simple with min-SNR weights, gamma {c.min_snr_gamma:g}" if c.loss_weighting == "min_snr"
           else "; L_simple") + f"; {grids}",
        *([f"plan: {plan.precision_note}"] if plan.precision_note else []),
        f"plan: expected end {end} (budget ends {_wall_clock(plan.deadline)})",
    ]


def _wall_clock(monotonic_t: float) -> str:
    when = datetime.now().astimezone() + timedelta(seconds=monotonic_t - time.monotonic())
    return when.strftime("%H:%M:%S %Z")


def resumed_config(config: RunConfig, run_dir: Path) -> RunConfig:
    """For --resume of a planned run (its saved config has train.budget_s): the saved config, with the new budget
    (None: continue to its saved train.steps as any run). Other runs: `config` unchanged."""
    saved_path = Path(run_dir) / "config.toml"
    if not saved_path.is_file():
        return config
    saved = load_config(saved_path)
    if saved.train.budget_s is None:
        return config
    return saved.replace("train.budget_s", config.train.budget_s)


class BudgetClock:
    """The trainer's guard: re-measures the step rate, moves the last step to the deadline, stops in time."""

    def __init__(self, plan: Plan, train, step: int):
        self.plan, self.train = plan, train
        self.loop_start, self.first_step, self.paused = time.monotonic(), step, 0.0
        self.every = max(1, round(REPLAN_EVERY * plan.steps))

    def _grids_left(self, step: int) -> int:
        c = self.train
        return (c.steps // c.sample_every - step // c.sample_every) if c.sample_every else 0

    def step_s(self, step: int) -> float:
        done = step - self.first_step
        if done < 3:
            return self.plan.timing.step_s
        return (time.monotonic() - self.loop_start - self.paused) / done

    def slowdown(self, step: int) -> float:
        """How much slower the machine is now than when probed (>= 1): the grids and checkpoint slow down too."""
        return max(1.0, self.step_s(step) / self.plan.timing.step_s)

    def should_stop(self, step: int) -> bool:
        """True when one more step would end after the deadline, with the final grid and checkpoint."""
        reserve = self.plan.reserve_s(1 if self.train.sample_every else 0) * self.slowdown(step)
        return time.monotonic() + self.step_s(step) + reserve > self.plan.deadline

    def after_step(self, step: int, paused: float) -> None:
        """Every REPLAN_EVERY of the run: train.steps <- the last step that ends on time at the measured rate."""
        self.paused += paused
        if (step - self.first_step) % self.every or step >= self.train.steps:
            return
        rate = self.step_s(step)
        left = self.plan.deadline - self.plan.budget_s * SAFETY - time.monotonic()
        reserve = self.plan.reserve_s(self._grids_left(step)) * self.slowdown(step)
        total = step + max(1, int((left - reserve) / rate))
        self.train.steps = max(step + 1, total)
