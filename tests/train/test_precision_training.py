"""Training under bf16/fp16 autocast: the opening line says what auto chose and why, resume is bit exact, the
non-finite-loss guard and fp16's gradient scaler work there too (issue 21)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ddpmkit import precision as P
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.store.checkpoint import latest_valid_checkpoint
from ddpmkit.train.trainer import Trainer

TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=20", "--set", "sample.steps=4",
        "--set", "train.num_samples=2", "--batch-size", "8", "--no-progress"]
COMPARED = ("model.safetensors", "ema.safetensors", "state.safetensors", "state.json")
IMAGES = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1), dtype=np.uint8)


def prec(name: str) -> list[str]:
    return ["--set", f'train.precision="{name}"']


def files(run, step: int) -> dict[str, bytes]:
    folder = run / "checkpoints" / f"step_{step:09d}"
    return {name: (folder / name).read_bytes() for name in COMPARED}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_resume_under_autocast_is_bit_exact(tmp_path, precision):
    common = ["--checkpoint-every", "3", "--sample-every", "100", *TINY, *prec(precision)]
    assert main(["train", "--out", str(tmp_path / "straight"), "--steps", "6", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "parts"), "--steps", "3", *common]) == 0
    assert main(["train", "--out", str(tmp_path / "parts"), "--steps", "6", "--resume", *common]) == 0
    assert files(tmp_path / "parts", 6) == files(tmp_path / "straight", 6)
    state = latest_valid_checkpoint(tmp_path / "parts" / "checkpoints")[0]
    for weights in state.weights.values():  # fp32 master weights and EMA, finite
        assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in weights.values())
    assert (state.state.get("scaler") is not None) == (precision == "fp16")  # fp16's scale is resumed too


@pytest.mark.parametrize("flags, expected", [({"avx2"}, "precision: fp32 (auto: the CPU has AVX2"),
                                             ({"avx512f", "avx512_bf16"}, "precision: bf16 autocast")])
def test_the_run_opens_with_what_auto_chose_and_why(tmp_path, monkeypatch, capsys, flags, expected):
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(P, "onednn_bf16", lambda: True)
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "1", "--sample-every", "0", *TINY]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith(expected) for line in lines[:4]), lines[:4]


def test_the_non_finite_loss_guard_holds_under_bf16(tmp_path, monkeypatch, capsys):
    draw = Trainer._draw

    def poisoned(self, step):
        x0, *rest = draw(self, step)
        return (x0 * math.nan if step >= 2 else x0, *rest)  # the losses of steps 3, 4, 5 are NaN

    monkeypatch.setattr(Trainer, "_draw", poisoned)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "8", "--checkpoint-every", "1", "--sample-every", "0",
                 *TINY, *prec("bf16"), "--set", "train.max_bad_losses=3"]) == 2
    assert "training stopped at step 5: 3 non-finite losses in a row" in capsys.readouterr().err
    ck, _ = latest_valid_checkpoint(run / "checkpoints")
    assert ck.step == 4  # steps 3 and 4 were skipped and saved as such; the third NaN in a row stopped the run
    two = (run / "checkpoints" / "step_000000002" / "model.safetensors").read_bytes()
    assert (run / "checkpoints" / "step_000000004" / "model.safetensors").read_bytes() == two  # untouched


def trainer(tmp_path, precision: str) -> Trainer:
    config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 20, "train.batch_size": 8,
                                      "train.warmup": 0, "train.precision": precision})
    return Trainer(config, tmp_path / precision, device="cpu", progress=False,
                   dataset=ImageDataset(IMAGES, None, "random"))


def test_fp16_scaler_skips_an_inf_gradient_and_backs_off_bf16_needs_none(tmp_path):
    bf16 = trainer(tmp_path, "bf16")
    assert bf16.autocast_dtype == torch.bfloat16 and not bf16.scaler.is_enabled()  # fp32's exponent range
    fp16 = trainer(tmp_path, "fp16")
    assert fp16.scaler.is_enabled()
    fp16._train_step(0)
    before = {k: v.clone() for k, v in fp16.model.state_dict().items()}
    scale = fp16.scaler.get_scale()
    hook = fp16.model.conv_in.weight.register_hook(lambda g: g * math.inf)  # finite loss, inf gradient
    loss, applied = fp16._train_step(1)
    hook.remove()
    assert math.isfinite(loss) and applied  # the loss guard passes it; the scaler catches it
    assert fp16.scaler.get_scale() == scale / 2
    for name, tensor in fp16.model.state_dict().items():
        assert torch.equal(tensor, before[name]), name  # the step was skipped, nothing became inf
    fp16._train_step(2)
    assert all(torch.isfinite(t).all() for t in fp16.model.state_dict().values())
