"""The trainer's fast paths give the results of the plain fp32 path: fused Adam, channels_last, bf16 autocast,
torch.compile. Speed is measured by bench/throughput.py, never here."""

import shutil

import numpy as np
import pytest
import torch

from ddpmkit.config import RunConfig
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.train.trainer import Trainer, _with_optimizer_flags

IMAGES = np.random.default_rng(0).integers(0, 256, (64, 8, 8, 1), dtype=np.uint8)


def trainer(tmp_path, name: str, **train) -> Trainer:
    values = {"model.preset": "tiny", "diffusion.timesteps": 20, "train.batch_size": 16, "train.warmup": 0,
              "train.lr": 1e-3, "train.precision": "fp32",  # the plain path; auto may be bf16 (ddpmkit.precision)
              **{f"train.{k}": v for k, v in train.items()}}
    config = RunConfig().with_values(values)
    return Trainer(config, tmp_path / name, device="cpu", progress=False,
                   dataset=ImageDataset(IMAGES, None, "random"))


def train_steps(tr: Trainer, n: int) -> list[float]:
    losses = []
    for step in range(n):
        loss, applied = tr._train_step(step)
        assert applied
        losses.append(loss)
    return losses


def assert_weights_close(a: torch.nn.Module, b: torch.nn.Module, rtol: float, atol: float) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.isfinite(p).all(), name
        torch.testing.assert_close(p, q, rtol=rtol, atol=atol, msg=lambda m, name=name: f"{name}: {m}")


def reference(tmp_path, n: int) -> tuple[Trainer, list[float]]:
    """The plain path: fp32, contiguous, eager, and torch's per-tensor Adam loop instead of the fused kernel."""
    ref = trainer(tmp_path, "ref")
    ref.optimizer = torch.optim.Adam(ref.model.parameters(), lr=1e-3, foreach=False, fused=False)
    return ref, train_steps(ref, n)


def test_cpu_training_uses_fused_adam_and_it_matches_the_per_tensor_loop(tmp_path):
    fast = trainer(tmp_path, "fast")
    assert fast.optimizer.param_groups[0]["fused"] is True
    ref, ref_losses = reference(tmp_path, 5)
    assert train_steps(fast, 5) == pytest.approx(ref_losses, rel=1e-5)
    assert_weights_close(fast.model, ref.model, rtol=1e-4, atol=1e-5)  # 1% of one Adam step (lr 1e-3)
    assert_weights_close(fast.ema.model, ref.ema.model, rtol=1e-4, atol=1e-5)


def test_an_optimizer_state_saved_by_another_kernel_resumes_on_this_one(tmp_path):
    """load_state_dict copies every group option from the file; a checkpoint of the per-tensor loop must not turn
    the fused kernel off on resume, and the moments must carry over."""
    old = trainer(tmp_path, "old")
    old.optimizer = torch.optim.Adam(old.model.parameters(), lr=1e-3, foreach=False, fused=False)
    train_steps(old, 2)
    saved = old.optimizer.state_dict()
    new = trainer(tmp_path, "new")
    new.optimizer.load_state_dict(_with_optimizer_flags(saved, new.optimizer))
    group = new.optimizer.param_groups[0]
    assert group["fused"] is True and group["foreach"] is None
    for p_old, p_new in zip(old.model.parameters(), new.model.parameters()):
        torch.testing.assert_close(new.optimizer.state[p_new]["exp_avg"], old.optimizer.state[p_old]["exp_avg"])
    assert saved["param_groups"][0]["fused"] is False  # the saved dict itself is left alone


def test_channels_last_training_matches_contiguous(tmp_path):
    ref, ref_losses = reference(tmp_path, 3)
    fast = trainer(tmp_path, "cl", channels_last=True)
    assert next(p for p in fast.model.parameters() if p.dim() == 4).is_contiguous(memory_format=torch.channels_last)
    assert train_steps(fast, 3) == pytest.approx(ref_losses, rel=1e-4)
    assert_weights_close(fast.model, ref.model, rtol=1e-3, atol=5e-5)  # 5% of one Adam step


def test_bf16_training_stays_close_to_fp32(tmp_path):
    ref, ref_losses = reference(tmp_path, 3)
    fast = trainer(tmp_path, "bf16", precision="bf16")
    assert train_steps(fast, 3) == pytest.approx(ref_losses, rel=5e-2)
    for p in fast.model.parameters():  # fp32 master weights (autocast lowers only the matmuls and convs), and
        assert p.dtype == torch.float32 and torch.isfinite(p).all()  # finite, so every gradient was finite


@pytest.mark.skipif(not (shutil.which("c++") or shutil.which("g++")),
                    reason="torch.compile on CPU needs a C++ compiler")
@pytest.mark.slow  # inductor compiles the forward and backward graphs: about a minute on two cores
def test_compiled_training_matches_eager(tmp_path):
    ref, ref_losses = reference(tmp_path, 3)
    fast = trainer(tmp_path, "compiled", compile=True)
    assert fast.net is not fast.model  # the step runs the compiled module
    assert train_steps(fast, 3) == pytest.approx(ref_losses, rel=1e-4)
    assert_weights_close(fast.model, ref.model, rtol=1e-3, atol=5e-5)  # 5% of one Adam step
