"""train.grad_checkpoint: the same training, bit for bit, with every block recomputed in the backward pass."""

import numpy as np
import pytest
import torch

from ddpmkit.config import RunConfig
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.models.layers import AttnBlock, ResBlock
from ddpmkit.train.memory import enable_grad_checkpoint
from ddpmkit.train.trainer import Trainer

IMAGES = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)


def trainer(tmp_path, name: str, precision: str, **train) -> Trainer:
    values = {"model.preset": "tiny", "model.dropout": 0.3,  # dropout: the recomputation must replay its draws
              "diffusion.timesteps": 20, "train.batch_size": 8, "train.warmup": 0, "train.lr": 1e-3,
              "train.precision": precision, **{f"train.{k}": v for k, v in train.items()}}
    return Trainer(RunConfig().with_values(values), tmp_path / name, device="cpu", progress=False,
                   dataset=ImageDataset(IMAGES, None, "random"))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_grad_checkpoint_trains_bit_for_bit_the_same(tmp_path, precision):
    plain = trainer(tmp_path, "plain", precision)
    ckpt = trainer(tmp_path, "ckpt", precision, grad_checkpoint=True)
    calls = []
    real = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    import ddpmkit.train.memory as memory

    memory.checkpoint, saved = counting, memory.checkpoint
    try:
        for step in range(3):
            assert plain._train_step(step)[0] == ckpt._train_step(step)[0]
    finally:
        memory.checkpoint = saved
    blocks = sum(isinstance(m, (ResBlock, AttnBlock)) for m in ckpt.model.modules())
    assert len(calls) == 3 * blocks  # every block of every step went through torch.utils.checkpoint
    for (name, a), b in zip(plain.model.state_dict().items(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(plain.ema.state_dict().items(), ckpt.ema.state_dict().values()):
        assert torch.equal(a, b), name


def test_checkpointed_blocks_keep_their_names_and_a_copy_runs_its_own_weights():
    import copy

    from ddpmkit.models import UNet

    torch.manual_seed(0)
    net = UNet.from_preset("tiny")
    torch.nn.init.normal_(net.down[0].block[0].conv2.weight, std=0.05)  # zero-initialised: the block is x + 0
    keys = list(net.state_dict())
    assert enable_grad_checkpoint(net) == sum(isinstance(m, (ResBlock, AttnBlock)) for m in net.modules())
    assert enable_grad_checkpoint(net) == 0  # once only
    assert list(net.state_dict()) == keys  # checkpoints are the same files
    twin = copy.deepcopy(net)  # as the EMA copies the model
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    block = twin.down[0].block[0]
    h, temb = torch.randn(2, block.conv1.in_channels, 8, 8), torch.randn(2, block.temb_proj.in_features)
    with torch.enable_grad():  # the checkpointed path
        assert torch.equal(block(h, temb), ResBlock.forward(block, h, temb))  # the copy's own (halved) weights
