"""The training loop: Algorithm 1 of [DDPM] with the paper's optimiser, EMA, safe checkpoints and torchrun.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Algorithm 1; App. B (Adam 2e-4, warm-up 5000, clip 1, EMA).

Reproducibility: every random draw of a step (which images, flips, t, noise, dropout) comes from a seed made of
(config seed, step), not from a generator carried along. So a run resumed from its checkpoint at step s draws
exactly what the uninterrupted run drew after step s, and its final weights are bit for bit the same (CPU).
The draws are made for the global batch and each rank takes its slice, so N processes see what one process
with the same global batch sees.

Run directory:
    config.toml        the resolved config         metrics.jsonl   one JSON line per log interval
    loss.png           the loss curve              samples.png     the newest sample grid (EMA weights)
    samples/           a grid per sample interval  checkpoints/    step_XXXXXXXXX folders (store/checkpoint.py)
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import RunConfig, config_differences, to_toml
from ..data import ImageDataset, check_enough, from_model_range, to_model_range
from ..errors import ConfigError, UserError
from ..figures.grid import plot_loss, save_grid
from ..guidance import ClassifierFreeGuidance
from ..pipeline import build_diffusion, build_model
from ..precision import decide, under
from ..samplers import SamplingStopped
from . import conditional as cond
from . import distributed
from ..store.checkpoint import check_weights_fit, latest_valid_checkpoint, list_checkpoints, save_checkpoint
from .data import load_training_data
from . import budget
from ..store import readiness
from .lr_schedule import lr_at
from .power_ema import build_ema
from .weighting import loss_weights
from ..store.faults import fault_point
from .autoconfig import RunTimeEstimate, describe_network
from .importance import ImportanceTimesteps, timestep_sampler
from .periodic_eval import periodic_eval
from .prefetch import Prefetcher
from .runlog import MetricsLog as _MetricsLog, StopOnSignals as _StopOnSignals
from .runlog import atomic_write as _atomic_write, truncate_metrics as _truncate_metrics


def step_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (config seed, step, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class BatchOrder:
    """Which images make up the global batch of each step: epochs of seeded permutations, read as one stream."""

    def __init__(self, num_images: int, batch_size: int, seed: int):
        self.n, self.b, self.seed = num_images, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, 1))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """Positions step*B .. step*B + B - 1 of the stream; a batch may straddle two epochs."""
        pos = torch.arange(step * self.b, (step + 1) * self.b)
        epochs, offsets = pos // self.n, pos % self.n
        return torch.cat([self._perm(int(e))[offsets[epochs == e]] for e in epochs.unique()])


class Trainer:
    """`Trainer(config, run_dir).run()` trains, checkpoints and samples; see `ddpm train`."""

    def __init__(self, config: RunConfig, run_dir: str | Path, *, resume: bool = False, force: bool = False,
                 device: str = "auto", progress: bool = True, dataset: ImageDataset | None = None,
                 cache=None, prefetch: int = 2, conditional: bool = False, started: float | None = None,
                 fixed=()):
        """conditional: set model.num_classes from the data's labels (`ddpm train --conditional`).
        With train.budget_s (`ddpm train --minutes`): the budget counts from `started` (time.monotonic(); default
        now), and the planner (train/budget.py) keeps the config keys named in `fixed` as they are."""
        started = time.monotonic() if started is None else started
        if resume:  # a planned run resumes with its saved network and recipe
            planned = budget.resumed_config(config, run_dir)
            dataset = dataset if planned.data == config.data else None
            config = planned
        self.config, self.run_dir = config, Path(run_dir)
        self.resume, self.force, self.progress = resume, force, progress
        self.dist = distributed.setup(device)
        c = config.train
        if c.batch_size % self.dist.world_size:
            raise ConfigError(f"--batch-size {c.batch_size} must be divisible by the {self.dist.world_size} processes")
        self.data = dataset or load_training_data(config.data, self.dist, cache, progress=progress, say=self._say)
        config, self.plan = self._plan(config, started, fixed)
        c = config.train
        check_enough(self.data, c.batch_size)
        config, self.classes = cond.prepare(config, self.data, conditional)  # model.num_classes from the labels
        self.config = config
        self.labels = torch.from_numpy(self.data.labels) if self.classes is not None else None
        self.order = BatchOrder(len(self.data), c.batch_size, c.seed)
        self.batches = Prefetcher(self._batch_images, prefetch, end=c.steps)  # images only: draws stay in _draw
        self.diffusion = build_diffusion(config).to(self.dist.device)
        torch.manual_seed(c.seed)  # the initial weights
        self.model = build_model(config, self.data.image_size, self.data.channels).to(self.dist.device)
        if c.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = build_ema(self.model, c)  # exponential (the paper's) or power-function [EDM2]
        if c.grad_checkpoint:  # after the EMA's copy: the EMA net only samples, nothing to recompute there
            from .memory import enable_grad_checkpoint

            enable_grad_checkpoint(self.model)
        # fused Adam: one kernel for all tensors, 3.6x faster than the per-tensor loop for 35.7M parameters on CPU
        # (docs/PERFORMANCE.md); it also skips a step on the device when GradScaler finds an inf (fp16)
        fused = self.dist.device.type in ("cpu", "cuda") or None  # None: torch's choice elsewhere
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=c.lr, fused=fused)
        self.precision = decide(c.precision, self.dist.device)  # auto: by capability (ddpmkit/precision.py)
        if self.plan is not None and self.plan.precision_note:  # auto, timed per network by the budget plan
            self.precision = dataclasses.replace(self.precision, reason=self.plan.precision_note)
        self.autocast_dtype = self.precision.dtype
        self.scaler = torch.amp.GradScaler(self.dist.device.type, enabled=self.autocast_dtype == torch.float16)
        self.net = self._wrap(self.model)
        self.step, self.bad_losses, self.stop_signal = 0, 0, None
        # uniform t, or importance-sampled for L_vlb [IDDPM Sec. 3.3]; every rank keeps the same history
        self.timesteps = timestep_sampler(c.timestep_sampler, c.loss, self.diffusion.num_timesteps)
        self.periodic_eval = periodic_eval(self)  # train.eval_every: KID/FID/PR at checkpoints (None when 0)
        self.t_loss_weight = loss_weights(c, self.diffusion, config.diffusion.parameterization)  # None: L_simple

    def _plan(self, config: RunConfig, started: float, fixed) -> tuple[RunConfig, "budget.Plan | None"]:
        """With train.budget_s: probe this machine and plan the run (train/budget.py); else the config as it is."""
        if config.train.budget_s is None:
            return config, None
        if self.dist.active:
            raise UserError("--minutes/--hours (train.budget_s) plans one process; run it without torchrun, or "
                            "give --steps")
        plan = budget.plan_run(config, self.data, self.dist.device, started=started, fixed=fixed,
                               resumed=self.resume and (self.run_dir / "config.toml").is_file())
        return plan.config, plan

    def _batch_images(self, step: int) -> torch.Tensor:
        """uint8 (B, H, W, C) images of the global batch of `step`, copied out of the (possibly mapped) array."""
        return torch.from_numpy(np.asarray(self.data.images[self.order.indices(step).numpy()]))

    def _wrap(self, model):
        net = model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.dist.device.index] if self.dist.device.type == "cuda" else None
            net = DistributedDataParallel(model, device_ids=ids)
        return torch.compile(net) if self.config.train.compile else net

    # --- state ---------------------------------------------------------------------------------------------

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _meta(self) -> dict:
        meta = {"run": self.config.to_dict(), "image_size": self.data.image_size, "channels": self.data.channels,
                "data": {"name": self.data.name, "num_images": len(self.data)}}
        if self.classes is not None:
            meta["classes"] = self.classes.to_dict()
        return meta

    def _restore(self) -> None:
        """Continue from the newest valid checkpoint (with --resume), or refuse to overwrite an existing run."""
        existing = list_checkpoints(self.ckpt_dir)
        if not self.resume:
            if existing:
                raise UserError(f"{self.run_dir} already holds a run (up to {existing[-1].name}): pass --resume to "
                                "continue it, or choose a new --out")
            return
        ckpt, warnings = latest_valid_checkpoint(self.ckpt_dir)
        for w in warnings:
            self._say(f"warning: {w}")
        if ckpt is None:
            if existing:
                raise UserError(f"{self.ckpt_dir}: no checkpoint there is valid (see the warnings); cannot resume")
            self._say(f"no checkpoint in {self.ckpt_dir} yet: starting from step 0")
            return
        if "optimizer" not in ckpt.state:  # e.g. ddpm import-diffusers: weights only
            raise UserError(f"{ckpt.path}: holds weights without optimizer state (an imported model), so it cannot "
                            "be resumed; train a new run with --out elsewhere")
        cond.check_resume(ckpt.config or {}, self.classes, ckpt.path)
        self._check_same_run(ckpt.config or {}, ckpt.path)
        for name in ("model", "ema"):  # a --force'd change of model size ends here, with the keys named
            check_weights_fit(self.model, ckpt.weights[name], f"{ckpt.path}/{name}.safetensors")
        self.model.load_state_dict(ckpt.weights["model"])
        self.ema.load_state_dict(ckpt.weights["ema"])
        self.optimizer.load_state_dict(_with_optimizer_flags(ckpt.state["optimizer"], self.optimizer))
        if ckpt.state.get("scaler"):
            self.scaler.load_state_dict(ckpt.state["scaler"])
        self.timesteps.load_state_dict(ckpt.state.get("timesteps") or {})
        self.step, self.bad_losses = int(ckpt.state["step"]), int(ckpt.state["bad_losses"])
        self._say(f"resuming from {ckpt.path} (step {self.step})")

    def _check_same_run(self, saved: dict, where: Path) -> None:
        old, new = dict(saved.get("run", {})), self.config.to_dict()
        old["data_found"] = saved.get("data", {})
        new["data_found"] = self._meta()["data"]
        diffs = config_differences(old, new)
        if diffs and not self.force:
            raise ConfigError(f"--resume: the config differs from {where}: {'; '.join(diffs)} (pass --force to "
                              "resume anyway)")
        for diff in diffs:
            self._say(f"warning: resuming with a changed config (--force): {diff}")

    def _save(self) -> Path | None:
        path = None
        if self.dist.is_main:
            state = {"step": self.step, "bad_losses": self.bad_losses, "optimizer": self.optimizer.state_dict(),
                     "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                     "timesteps": self.timesteps.state_dict()}
            weights = {"model": self.model.state_dict(), "ema": self.ema.state_dict()}
            path = save_checkpoint(self.ckpt_dir, self.step, weights=weights, state=state, config=self._meta(),
                                   keep=self.config.train.keep_checkpoints)
        distributed.barrier(self.dist)
        return path

    # --- one step of Algorithm 1 ----------------------------------------------------------------------------

    def _draw(self, step: int):
        """This rank's slice of the global batch: x0 (b, C, H, W), t (b,), noise; all from (seed, step)."""
        c, n_ranks, rank = self.config.train, self.dist.world_size, self.dist.rank
        g = torch.Generator().manual_seed(step_seed(c.seed, step, 2))
        x0 = to_model_range(self.batches.get(step))  # (B, C, H, W) in [-1, 1]
        flip = torch.rand(c.batch_size, generator=g) < 0.5
        if self.config.data.hflip:
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t, weight = self.timesteps.sample(c.batch_size, g)  # line 3; weight 1 / (T p_t) or None (uniform)
        noise = torch.randn(x0.shape, generator=g)  # line 4
        part = slice(rank * c.batch_size // n_ranks, (rank + 1) * c.batch_size // n_ranks)
        dev = self.dist.device
        fmt = torch.channels_last if c.channels_last else torch.contiguous_format
        weight = weight[part].to(dev, torch.float32) if weight is not None else None
        return (x0[part].to(dev).contiguous(memory_format=fmt), t[part].to(dev), noise[part].to(dev), weight)

    def _train_step(self, step: int) -> tuple[float, bool]:
        """Lines 2-5 of Algorithm 1 with warm-up, clipping and EMA; returns (loss, whether it was applied)."""
        c = self.config.train
        torch.manual_seed(step_seed(c.seed, step, 3, self.dist.rank))  # dropout
        x0, t, noise, weight = self._draw(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, c)  # warm-up, then constant or decaying (train/lr_schedule.py)
        self.model.train()
        amp = (torch.autocast(self.dist.device.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else nullcontext())
        with amp:
            terms = self.diffusion.training_loss(self._net_for(step), x0, t, noise, loss=c.loss, t_weight=weight,
                                                 hybrid_lambda=c.hybrid_lambda, return_terms=True)
            per_example = terms["loss"] if self.t_loss_weight is None else terms["loss"] * self.t_loss_weight.to(
                terms["loss"].device)[t]  # min-SNR-gamma [MinSNR]
            loss = per_example.mean()  # line 5
        loss_value = float(loss.detach())
        (bad,) = distributed.any_true(self.dist, not math.isfinite(loss_value))  # all ranks skip together
        if bad:
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, False
        self.scaler.scale(loss).backward()
        if c.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model, step)
        if isinstance(self.timesteps, ImportanceTimesteps):  # the global batch's terms, so all ranks agree
            self.timesteps.update(*distributed.gather(self.dist, t, terms["vb"]))
        return loss_value, True

    def _net_for(self, step: int):
        """The net as Diffusion calls it: model(x_t, t), with this step's (dropped) labels for a conditional run."""
        if self.classes is None:
            return self.net
        c, n = self.config.train, self.dist.world_size
        part = slice(self.dist.rank * c.batch_size // n, (self.dist.rank + 1) * c.batch_size // n)
        y = cond.step_labels(self.labels, self.order.indices(step), c.label_dropout, step_seed(c.seed, step, 4),
                             part, self.dist.device)
        return cond.labelled(self.net, y)

    # --- the loop -------------------------------------------------------------------------------------------

    def run(self) -> dict:
        """Train to `train.steps`; returns {"step", "checkpoint", "interrupted", "samples", "is_main"}."""
        try:
            self.say(describe_network(self.model, self.config, self.data))
            self.say(self.precision.describe())
            self._restore()
            self._start_plan()
            self._prepare_run_dir()
            with _StopOnSignals(self):
                return {**self._loop(), "is_main": self.dist.is_main}
        finally:
            self.batches.close()
            distributed.cleanup(self.dist)

    def _start_plan(self) -> None:
        """A planned run trains plan.steps from the step it starts at (0, or the checkpoint's on --resume)."""
        if self.plan is None:
            return
        self.config.train.steps = self.step + self.plan.steps
        self.batches.end = self.config.train.steps
        for line in budget.describe(self.plan, self.step):
            self.say(line)

    def _prepare_run_dir(self) -> None:
        if not self.dist.is_main:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _atomic_write(self.run_dir / "config.toml", to_toml(self.config))
            if self.classes is not None:
                cond.write_classes(self.run_dir, self.classes)
        except OSError as err:
            raise UserError(f"--out {self.run_dir}: cannot write there ({err.strerror or err})") from None
        _truncate_metrics(self.run_dir / "metrics.jsonl", self.step)

    def _loop(self) -> dict:
        c = self.config.train
        bar = tqdm(total=c.steps, initial=self.step, disable=not (self.progress and self.dist.is_main),
                   desc="train", dynamic_ncols=True)
        logger = _MetricsLog(self.run_dir, self.dist.is_main, c.batch_size, c.log_every)
        last_saved, checkpoint = self.step, None
        eta = RunTimeEstimate(self.step, c.steps, self.say)
        clock = budget.BudgetClock(self.plan, c, self.step) if self.plan is not None else None
        while self.step < c.steps:
            # a signal may reach one rank only: all ranks agree before the step whether to stop
            (stop,) = distributed.any_true(self.dist, self.stop_signal is not None)
            if stop:
                self.stop_signal = self.stop_signal or "peer"
                break
            if clock is not None and clock.should_stop(self.step):
                break  # the budget: the last checkpoint and grid below
            loss, applied = self._train_step(self.step)
            self.bad_losses = 0 if applied else self.bad_losses + 1
            if self.bad_losses >= c.max_bad_losses:
                bar.close()
                raise UserError(f"training stopped at step {self.step + 1}: {self.bad_losses} non-finite losses in "
                                f"a row (lower --lr or use precision fp32); the last good checkpoint is kept in "
                                f"{self.ckpt_dir}")
            self.step += 1
            fault_point("train:step")  # tests kill the run here (DDPMKIT_FAULT=train:step@N)
            bar.update(1)
            logger.add(self.step, loss, applied, self.optimizer.param_groups[0]["lr"], bar)
            paused = time.perf_counter()
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                checkpoint, last_saved = self._save(), self.step
            if c.sample_every and (self.step % c.sample_every == 0 or self.step == c.steps):
                self.write_samples()  # a signal during the grid stops it at once; the loop then saves and ends
            if self.periodic_eval is not None:
                self.periodic_eval(self.step, logger)  # metrics.jsonl + TensorBoard; not counted in images/s
            logger.t0 += time.perf_counter() - paused  # images/s counts training time only
            eta.after_step(self.step, time.perf_counter() - paused)
            if clock is not None:
                clock.after_step(self.step, time.perf_counter() - paused)
                bar.total = c.steps
        if self.stop_signal is not None and last_saved != self.step:
            checkpoint = self._save()
        elif clock is not None and last_saved != self.step:  # stopped by the budget before the planned end
            checkpoint = self._save()
            if c.sample_every:
                self.write_samples()
        if clock is not None and self.dist.is_main:  # the last step as re-planned, for a later --resume
            _atomic_write(self.run_dir / "config.toml", to_toml(self.config))
        bar.close()
        logger.close()
        grid = self.run_dir / "samples.png"
        warn = readiness.warning(c, self.step, self.run_dir, self.config.data.spec)
        if warn:
            self._say(warn)
        used = {"budget_s": self.plan.budget_s, "elapsed_s": time.monotonic() - self.plan.started} if self.plan else {}
        return {"step": self.step, "checkpoint": checkpoint, "interrupted": self.stop_signal,
                "samples": grid if grid.exists() else None, "untrained": warn is not None, **used}

    @torch.no_grad()
    def write_samples(self) -> None:
        """A grid of num_samples images from the EMA weights, same seed every time so progress is visible.

        SIGINT/SIGTERM during the grid ends it before the next sampling step; the grid is then not written."""
        if not self.dist.is_main:
            distributed.barrier(self.dist)
            return
        c, s = self.config.train, self.config.sample
        gen = torch.Generator().manual_seed(c.seed)
        shape = (c.num_samples, self.data.channels, self.data.image_size, self.data.image_size)
        model = under(self.ema.model, decide(s.precision, self.dist.device))  # only the net under autocast
        if self.classes is not None:  # row-major, the classes in turn, unguided
            model = ClassifierFreeGuidance(model, torch.arange(c.num_samples) % len(self.classes.names))
        try:
            x = self.diffusion.sample(model, shape, sampler=s.sampler, steps=s.steps, eta=s.eta,
                                      spacing=s.spacing, generator=gen, progress=False,
                                      stop=lambda: self.stop_signal is not None)
        except SamplingStopped:
            distributed.barrier(self.dist)
            return
        images = from_model_range(x.cpu()).numpy()
        save_grid(images, self.run_dir / "samples" / f"step_{self.step:09d}.png")
        save_grid(images, self.run_dir / "samples.png")
        if (self.run_dir / "metrics.jsonl").exists():
            plot_loss(self.run_dir / "metrics.jsonl", self.run_dir / "loss.png")
        distributed.barrier(self.dist)

    def say(self, text: str) -> None:
        """A line on stdout from the main process: what the run uses and how long it takes (stderr is for
        warnings and the one line of an error)."""
        if self.dist.is_main:
            tqdm.write(text, file=sys.stdout)

    def _say(self, text: str) -> None:
        if self.dist.is_main:
            tqdm.write(text, file=sys.stderr)


def _with_optimizer_flags(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """`saved` with this optimizer's implementation flags (fused, foreach): load_state_dict takes every group option
    from the file, so a checkpoint written by another torch or device would otherwise switch the kernel on resume."""
    flags = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(flags):
        return saved  # load_state_dict names the mismatch
    return {**saved, "param_groups": [{**g, **f} for g, f in zip(groups, flags)]}
