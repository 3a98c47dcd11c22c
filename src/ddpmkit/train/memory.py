"""Activation checkpointing (`train.grad_checkpoint = true`): memory for the 256x256 presets.

Each ResBlock and AttnBlock of the U-Net keeps only its inputs in the forward pass and recomputes its insides
in the backward pass (torch.utils.checkpoint, non-reentrant). Peak memory then grows with the number of blocks'
inputs instead of every intermediate activation, for about one more forward pass of time. The recomputation
replays the same random state (dropout) and the same autocast, so the gradients are the ones of the plain
pass: training is bit for bit the same on the CPU (tests/train/test_memory.py). Measured on celebahq256 in
docs/PERFORMANCE.md (bench/grad_checkpoint.py).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..models.layers import AttnBlock, ResBlock

BLOCKS = (ResBlock, AttnBlock)


def _checkpointed_forward(module: nn.Module, *args):
    """The block's own forward, through torch.utils.checkpoint when a backward pass will follow."""
    forward = functools.partial(type(module).forward, module)
    if not torch.is_grad_enabled():  # sampling and evaluation: nothing to save memory on
        return forward(*args)
    return checkpoint(forward, *args, use_reentrant=False, preserve_rng_state=True)


def enable_grad_checkpoint(model: nn.Module) -> int:
    """Recompute every ResBlock/AttnBlock of `model` in the backward pass; returns how many blocks. The weights
    and their names are unchanged (only each block's forward is wrapped), so checkpoints are the same files."""
    count = 0
    for module in model.modules():
        if isinstance(module, BLOCKS) and not getattr(module, "_grad_checkpoint", False):
            # a partial, not a closure: a deepcopy (the EMA's) then points at its own copy of the block
            module.forward = functools.partial(_checkpointed_forward, module)
            module._grad_checkpoint = True
            count += 1
    return count
