"""One process or many under torchrun: who this process is, and the few collectives the trainer needs.

Under `torchrun --nproc_per_node N`, the environment holds RANK, LOCAL_RANK and WORLD_SIZE; we start a process
group (NCCL on CUDA, gloo on the CPU), and rank 0 does all writing. With no such variables (or WORLD_SIZE 1)
everything here is a no-op and no process group is started.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import ConfigError


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


def pick_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """"auto": this process's GPU when CUDA is there, else the CPU; or an explicit "cpu", "cuda", "cuda:1"."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name}: not a device name; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return device


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
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return DistInfo(dist.get_rank(), world_size, local_rank, dev)


def any_true(info: DistInfo, *flags: bool) -> list[bool]:
    """For each flag, whether it is true on any rank (one small all-reduce), so all ranks take the same branch."""
    if not info.active:
        return list(flags)
    t = torch.tensor([float(f) for f in flags], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.active:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.active and dist.is_initialized():
        dist.destroy_process_group()
