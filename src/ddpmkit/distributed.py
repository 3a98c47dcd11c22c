"""One process or many under torchrun: who this process is, and the few collectives the trainer needs.

Under `torchrun --nproc_per_node N`, the environment holds RANK, LOCAL_RANK and WORLD_SIZE; we start a process
group (NCCL on CUDA, gloo on the CPU), and rank 0 does all writing. With no such variables (or WORLD_SIZE 1)
everything here is a no-op and no process group is started.

Training (ddpmkit.train) and the long jobs of sampling and evaluation (ddpmkit.jobs) share it; it lives below both so
that reading a model never imports the trainer (ddpmkit.train.distributed is the old path, kept as a shim).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from .store.device import pick_device  # noqa: F401  (re-exported: distributed.pick_device)

_TIMEOUT = timedelta(minutes=30)


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; otherwise describe a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size <= 1:
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        store = _attempt_store()
        extra = {"store": store, "rank": int(os.environ["RANK"]), "world_size": world_size} if store else {}
        dist.init_process_group(backend=backend, timeout=_TIMEOUT, **extra)
    return DistInfo(dist.get_rank(), world_size, local_rank, dev)


def _attempt_store():
    """torchrun's store, under a prefix of its own for each restart of the group, or None outside torchrun.

    torchrun (c10d rendezvous) keeps one store for the whole job, and a group restarted by --max-restarts would read
    the dead group's addresses from it and fail to connect (pytorch/pytorch#135712); a prefix per attempt avoids that.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                         timeout=_TIMEOUT)
    return dist.PrefixStore(f"ddpmkit/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/", base)


def any_true(info: DistInfo, *flags: bool) -> list[bool]:
    """For each flag, whether it is true on any rank (one small all-reduce), so all ranks take the same branch."""
    if not info.active:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather(info: DistInfo, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each rank's (b,) tensors joined in rank order into the global batch's (world_size * b,), on the CPU.

    One all_gather for all of them (sent as float64, exact for int64 values below 2**53); every rank gets the same
    bytes, so state built from them (the importance sampler's history) stays identical on all ranks.
    """
    if not info.active:
        return [t.detach().cpu() for t in tensors]
    stacked = torch.stack([t.detach().to(torch.float64) for t in tensors])  # (k, b)
    parts = [torch.empty_like(stacked) for _ in range(info.world_size)]
    dist.all_gather(parts, stacked)
    joined = torch.cat(parts, dim=1).cpu()  # (k, world_size * b): one transfer
    return [row.to(t.dtype) for row, t in zip(joined, tensors)]


def shared_token(info: DistInfo) -> str | None:
    """A random hex string that every rank of this job holds (rank 0's, broadcast); None for one process."""
    if not info.active:
        return None
    token = [uuid.uuid4().hex if info.is_main else None]
    dist.broadcast_object_list(token, src=0, device=info.device)
    return token[0]


def broadcast_object(info: DistInfo, obj=None):
    """Rank 0's `obj` (any picklable value) on every rank; `obj` itself for one process."""
    if not info.active:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0, device=info.device)
    return box[0]


def all_sum(info: DistInfo, value: int) -> int:
    """The sum of an integer over all ranks (one small all-reduce); `value` itself for one process."""
    if not info.active:
        return int(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()
