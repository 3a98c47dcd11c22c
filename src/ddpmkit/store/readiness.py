"""Is a checkpoint trained enough to sample? The reasons a stopped or short run would hand back noise, and the fix.

Here in store/, beside the checkpoint it judges, so that `ddpm sample` can warn without importing the trainer
(tests/store/test_layering.py): it recomputes the learning rates and EMA decays from the config, and
tests/store/test_readiness.py checks them against train/lr_schedule.py and the EMA classes.

Two things keep a network at its random initialisation, and both are computable from the config and the step
alone (no weights needed):
  * the learning-rate warm-up [DDPM App. B]: Adam moves each weight by about the learning rate per step, so after
    n steps a weight has moved at most sum_k lr_k (train/lr_schedule.py `lr_integral` times lr). Step 77 of a
    1000-step warm-up at lr 2e-4 is 2e-4 * sum_{k=1}^{77} k / 1000 = 6e-4, against an initial scale of about
    1 / sqrt(fan_in) (0.04 for a 3x3 conv of 64 channels): the network is still its random initialisation.
  * the EMA: after n updates it still holds prod_{k<n} decay_k of the initial weights. A fixed decay of 0.9995
    keeps 0.9995^77 = 96% of them at step 77; with the (1 + n) / (10 + n) warm-up (ddpmkit's default) 3e-12;
    the power-function EMA none (its first decay is 0).
"""

from __future__ import annotations

import math

MIN_LR_SUM = 0.02  # sum of the learning rates so far below this: samples are noise (bench/budget.py --part noise)
MAX_INITIAL_SHARE = 0.5  # the EMA holds more than this share of the initial weights: samples are noise


def lr_sum(train, steps: int) -> float:
    """sum of the learning rates of steps 0 .. steps-1, as train/lr_schedule.py `lr_at` sets them."""
    total, span = 0.0, max(train.steps - train.warmup, 1)
    decay = {"none": lambda p: 1.0, "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)), "linear": lambda p: 1 - p}
    for k in range(steps):
        if train.warmup and k < train.warmup:
            total += train.lr * (k + 1) / train.warmup
        else:
            total += train.lr * decay[train.lr_decay](min(max(k - train.warmup, 0) / span, 1.0))
    return total


def ema_decay_at(train, num_updates: int) -> float:
    """The decay of update `num_updates` (0-based) as train/ema.py applies it; for the power EMA only whether it
    is 0 matters here (its first update copies the weights [EDM2 Algorithm 2])."""
    if train.ema_schedule == "power":
        return 0.0 if num_updates == 0 else 1.0
    if not train.ema_warmup:
        return train.ema_decay
    return min(train.ema_decay, (1.0 + num_updates) / (10.0 + num_updates))


def ema_initial_share(train, steps: int) -> float:
    """Share of the EMA that is still the initial weights after `steps` updates."""
    log_share = 0.0
    for k in range(steps):
        d = ema_decay_at(train, k)
        if d <= 0.0:
            return 0.0
        log_share += math.log(d)
    return math.exp(log_share)


def untrained_reasons(train, step: int) -> list[str]:
    """Why the model at `step` (a TrainConfig's run) samples noise; [] when neither cause applies."""
    reasons = []
    moved = lr_sum(train, step)
    if moved < MIN_LR_SUM:
        warm = f", still in a learning-rate warm-up of {train.warmup} steps" if step < train.warmup else ""
        reasons.append(f"it has trained for {step} steps{warm}, so Adam (about one learning rate per step) has "
                       f"moved each weight by at most {moved:.2g} (the sum of its learning rates; samples need about "
                       f"{MIN_LR_SUM:g})")
    share = ema_initial_share(train, step)
    if share > MAX_INITIAL_SHARE:
        reasons.append(f"its EMA (decay {train.ema_decay:g}) still holds {share:.0%} of the random initial weights")
    return reasons


def warning(train, step: int, run_dir, data_spec: str | None = None) -> str | None:
    """One line for stderr when the model at `step` will sample noise: why, and what to do; else None."""
    reasons = untrained_reasons(train, step)
    if not reasons:
        return None
    data = f" --data {data_spec}" if data_spec else ""
    return (f"warning: the model at step {step} is not trained yet, so its samples will be noise: "
            f"{'; '.join(reasons)}. Continue it with `ddpm train --out {run_dir} --resume` (add --minutes M to "
            f"plan the rest), or train a run planned to fit your time: `ddpm train{data} --out NEW_DIR --minutes M`")
