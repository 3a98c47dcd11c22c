"""Which timesteps a training step draws: uniform (Algorithm 1), or importance-sampled for L_vlb.

References:
    [DDPM]  Ho, Jain & Abbeel 2020, arXiv 2006.11239: Algorithm 1, line 3 (t ~ Uniform).
    [IDDPM] Nichol & Dhariwal 2021, arXiv 2102.09672, Sec. 3.3 (Eq. 18): L_vlb = E_{t ~ p_t}[L_t / p_t] with
            p_t proportional to sqrt(E[L_t^2]), E[L_t^2] kept from the last 10 values of each term, and t drawn
            uniformly until every t has 10.

Both samplers share one interface: `sample(batch, generator) -> (t (B,) int64, weight (B,) float64 or None)`, the
weight being 1 / (T p_t), so that E_{t ~ p}[w_t L_t] = (1/T) sum_t L_t: the uniform objective, unbiased.
`update(t, term)` records the unweighted per-example terms of a step; `state_dict()` / `load_state_dict()` carry
the history through checkpoints, so a resumed run draws the same t as the uninterrupted one.

Everything lives on the CPU in float64: the trainer draws t with a CPU generator seeded by (seed, step), and the
history is one (T, 10) table updated with tensor ops from one batched transfer per step (no .item() per example).
"""

from __future__ import annotations

import torch

from ..errors import ConfigError, UserError

HISTORY = 10  # values of each L_t kept for E[L_t^2] [IDDPM Sec. 3.3]
UNIFORM_MIX = 1e-3  # share of uniform mixed into p_t, as IDDPM's code (uniform_prob): every p_t >= 1e-3 / T


class UniformTimesteps:
    """t ~ Uniform({0, ..., T-1}) [DDPM Algorithm 1, line 3]; no weights, no state."""

    def __init__(self, num_timesteps: int):
        self.num_timesteps = num_timesteps

    def probabilities(self) -> torch.Tensor:
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def sample(self, batch: int, generator: torch.Generator | None = None):
        return torch.randint(0, self.num_timesteps, (batch,), generator=generator), None

    def update(self, t: torch.Tensor, term: torch.Tensor) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class ImportanceTimesteps(UniformTimesteps):
    """p_t proportional to sqrt(E[L_t^2]) over the last `history` values of L_t, mixed with `uniform_mix` of the
    uniform distribution, once every t has `history` values; uniform (and unweighted) before [IDDPM Sec. 3.3]."""

    def __init__(self, num_timesteps: int, history: int = HISTORY, uniform_mix: float = UNIFORM_MIX):
        super().__init__(num_timesteps)
        if not 0.0 < uniform_mix <= 1.0:
            raise ConfigError(f"uniform_mix = {uniform_mix!r}: must lie in (0, 1] so that every p_t > 0")
        self.history, self.uniform_mix = history, uniform_mix
        self.values = torch.zeros(num_timesteps, history, dtype=torch.float64)  # a ring buffer per t
        self.count = torch.zeros(num_timesteps, dtype=torch.int64)  # values ever seen per t

    @property
    def warm(self) -> bool:
        """Whether every t has `history` values, so p_t is estimated rather than uniform."""
        return bool((self.count >= self.history).all())

    def probabilities(self) -> torch.Tensor:
        """p_t (T,) float64, positive and summing to 1 [IDDPM Sec. 3.3]."""
        if not self.warm:
            return super().probabilities()
        second_moment = (self.values**2).mean(dim=1)  # E[L_t^2]: the ring holds exactly the last `history`
        root = second_moment.sqrt()
        if not torch.isfinite(root).all() or root.sum() <= 0:
            return super().probabilities()
        p = root / root.sum()
        return (1.0 - self.uniform_mix) * p + self.uniform_mix / self.num_timesteps

    def sample(self, batch: int, generator: torch.Generator | None = None):
        """t ~ p by inverting the CDF at uniform draws, and weight 1 / (T p_t) [IDDPM Eq. 18 setup]."""
        if not self.warm:
            return super().sample(batch, generator)  # the very draws of the uniform sampler
        p = self.probabilities()
        u = torch.rand(batch, generator=generator, dtype=torch.float64)
        t = torch.searchsorted(torch.cumsum(p, 0), u, right=True).clamp_(max=self.num_timesteps - 1)
        return t, 1.0 / (self.num_timesteps * p[t])

    def update(self, t: torch.Tensor, term: torch.Tensor) -> None:
        """Append each term[i] to the history of t[i], in batch order; the oldest value of a full t drops out."""
        t = t.detach().to("cpu", torch.int64).reshape(-1)
        term = term.detach().to("cpu", torch.float64).reshape(-1)
        order = torch.sort(t, stable=True).indices  # group the batch by t, keeping batch order within a group
        t, term = t[order], term[order]
        n_new = torch.bincount(t, minlength=self.num_timesteps)  # (T,)
        first = torch.cumsum(n_new, 0) - n_new  # where each t's group starts in the sorted batch
        occurrence = torch.arange(len(t)) - first[t]  # 0, 1, ... within a group
        keep = occurrence >= n_new[t] - self.history  # more than `history` of one t: only the last ones count
        slot = (self.count[t] + occurrence) % self.history
        self.values[t[keep], slot[keep]] = term[keep]  # distinct (t, slot) pairs, so the write is well defined
        self.count += n_new

    def state_dict(self) -> dict:
        return {"values": self.values.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict) -> None:
        """Restore the history; an empty state (a checkpoint without one) starts it afresh."""
        if not state:
            return
        values, count = state["values"], state["count"]
        if tuple(values.shape) != tuple(self.values.shape) or tuple(count.shape) != tuple(self.count.shape):
            raise UserError(f"the checkpoint's timestep history is for T = {count.shape[0]} with "
                            f"{values.shape[-1]} values each, this run has T = {self.num_timesteps}: resume with "
                            "the config it was trained with")
        self.values = values.to(torch.float64).clone()
        self.count = count.to(torch.int64).clone()


SAMPLERS = {"uniform": UniformTimesteps, "importance": ImportanceTimesteps}


def timestep_sampler(name: str, loss: str, num_timesteps: int) -> UniformTimesteps:
    """The sampler of train.timestep_sampler: "auto" is importance sampling for loss = "vlb", as IDDPM, else
    uniform ("hybrid" keeps uniform t: its L_simple part would be reweighted otherwise [IDDPM Sec. 3.3])."""
    if name == "auto":
        name = "importance" if loss == "vlb" else "uniform"
    if name not in SAMPLERS:
        raise ConfigError(f"timestep sampler {name!r} is not one of {sorted(SAMPLERS) + ['auto']}")
    return SAMPLERS[name](num_timesteps)


__all__ = ["HISTORY", "UNIFORM_MIX", "ImportanceTimesteps", "UniformTimesteps", "timestep_sampler"]
