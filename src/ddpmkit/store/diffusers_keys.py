"""Tensor names: ddpmkit's UNet state_dict <-> diffusers' UNet2DModel state_dict, for the DDPM layouts.

The two networks are the same function layer for layer [DDPM App. B]; only the names and one fusion differ:

    ddpmkit                          diffusers UNet2DModel
    temb.dense0 / temb.dense1        time_embedding.linear_1 / time_embedding.linear_2
    conv_in, conv_out, norm_out      conv_in, conv_out, conv_norm_out
    down.i.block.j.*                 down_blocks.i.resnets.j.*       (temb_proj = time_emb_proj,
    up.i.block.j.*                   up_blocks.(L-1-i).resnets.j.*    nin_shortcut = conv_shortcut)
    down.i.attn.j.norm               down_blocks.i.attentions.j.group_norm
    ... .attn.j.qkv (3C x C)         ... .attentions.j.to_q, to_k, to_v (C x C each), stacked in that order
    ... .attn.j.proj_out             ... .attentions.j.to_out.0
    down.i.downsample.conv           down_blocks.i.downsamplers.0.conv
    up.i.upsample.conv               up_blocks.(L-1-i).upsamplers.0.conv
    mid.block_1, mid.attn_1, block_2 mid_block.resnets.0, mid_block.attentions.0, mid_block.resnets.1

ddpmkit's `up` is indexed by resolution level like `down`; diffusers' `up_blocks` run deepest first, so level i
is up_blocks[L - 1 - i]. Older diffusers files name the attention projections query, key, value and proj_attn;
those are read as to_q, to_k, to_v and to_out.0.
"""

from __future__ import annotations

import re

import torch

_RESNET = {"temb_proj": "time_emb_proj", "nin_shortcut": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "proj_out": "to_out.0"}
_QKV = ("to_q", "to_k", "to_v")
_LEGACY_ATTN = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_FIXED = {"temb.dense0": "time_embedding.linear_1", "temb.dense1": "time_embedding.linear_2",
          "conv_in": "conv_in", "conv_out": "conv_out", "norm_out": "conv_norm_out"}
_LEVEL = re.compile(r"(down|up)\.(\d+)\.(block|attn)\.(\d+)\.(\w+)\.(weight|bias)")
_RESAMPLE = re.compile(r"(down|up)\.(\d+)\.(downsample|upsample)\.conv\.(weight|bias)")
_MID = re.compile(r"mid\.(block_1|attn_1|block_2)\.(\w+)\.(weight|bias)")


def _attn(prefix: str, layer: str, param: str) -> list[str]:
    if layer == "qkv":
        return [f"{prefix}.{name}.{param}" for name in _QKV]
    return [f"{prefix}.{_ATTN.get(layer, layer)}.{param}"]


def theirs(key: str, levels: int) -> list[str] | None:
    """The diffusers names whose tensors make ddpmkit's `key` (three for a fused qkv); None if there is none."""
    module, _, param = key.rpartition(".")
    if module in _FIXED:
        return [f"{_FIXED[module]}.{param}"]
    if m := _LEVEL.fullmatch(key):
        path, level, kind, j, layer, param = m.groups()
        block = f"down_blocks.{level}" if path == "down" else f"up_blocks.{levels - 1 - int(level)}"
        if kind == "block":
            return [f"{block}.resnets.{j}.{_RESNET.get(layer, layer)}.{param}"]
        return _attn(f"{block}.attentions.{j}", layer, param)
    if m := _RESAMPLE.fullmatch(key):
        path, level, _, param = m.groups()
        if path == "down":
            return [f"down_blocks.{level}.downsamplers.0.conv.{param}"]
        return [f"up_blocks.{levels - 1 - int(level)}.upsamplers.0.conv.{param}"]
    if m := _MID.fullmatch(key):
        part, layer, param = m.groups()
        if part == "attn_1":
            return _attn("mid_block.attentions.0", layer, param)
        return [f"mid_block.resnets.{0 if part == 'block_1' else 1}.{_RESNET.get(layer, layer)}.{param}"]
    return None


def modern_names(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """`state` with older attention names (query, key, value, proj_attn) renamed; and any name given twice."""
    out, twice = {}, []
    for key, tensor in state.items():
        head, _, rest = key.partition(".attentions.")
        parts = rest.split(".")
        if rest and len(parts) == 3 and parts[1] in _LEGACY_ATTN:
            key = f"{head}.attentions.{parts[0]}.{_LEGACY_ATTN[parts[1]]}.{parts[2]}"
        if key in out:
            twice.append(key)
        out[key] = tensor
    return out, twice


def to_ddpmkit(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], levels: int):
    """ddpmkit's state_dict from diffusers' tensors, for a net whose state_dict is `expected`.

    Returns (weights, missing diffusers names, unused diffusers names, [(name, got shape, wanted shape)]).
    """
    weights, missing, wrong, used = {}, [], [], set()
    for key, want in expected.items():
        names = theirs(key, levels)
        if names is None:
            raise KeyError(f"no diffusers name for ddpmkit's {key}")  # a net that is not a DDPM layout: a bug here
        absent = [n for n in names if n not in state]
        if absent:
            missing += absent
            continue
        used.update(names)
        part_shape = (want.shape[0] // len(names), *want.shape[1:])  # (C, ...) each of q, k, v; else want's
        bad = [(n, tuple(state[n].shape)) for n in names if tuple(state[n].shape) != part_shape]
        if bad:
            wrong.append((*bad[0], part_shape))
            continue
        tensor = torch.cat([state[n] for n in names], dim=0) if len(names) > 1 else state[names[0]]
        weights[key] = tensor
    return weights, missing, sorted(set(state) - used), wrong


def to_diffusers(weights: dict[str, torch.Tensor], levels: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    """diffusers' state_dict from ddpmkit's (qkv split in three); and the ddpmkit keys that have no diffusers name."""
    out, unmapped = {}, []
    for key, tensor in weights.items():
        names = theirs(key, levels)
        if names is None:
            unmapped.append(key)
            continue
        chunks = tensor.chunk(len(names), dim=0) if len(names) > 1 else (tensor,)
        for name, chunk in zip(names, chunks):
            out[name] = chunk.detach().to("cpu").contiguous().clone()
    return out, unmapped
