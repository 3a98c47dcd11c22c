"""Issue 7 end to end: SIGKILL at random steps and at every stage of a save, signals, non-finite losses, low precision.

Every run is in-process or a fork of the test process (torch, scikit-learn and the optimizer are imported once), and
every kill comes from DDPMKIT_FAULT (faults.py) at a chosen point, not from timing. The final weights, EMA and
optimizer state of each interrupted run are compared byte for byte with one uninterrupted run.
"""

from __future__ import annotations

import math
import os
import random
import signal
import traceback
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ddpmkit.cli import main
from ddpmkit.store import faults
from ddpmkit.store.checkpoint import latest_valid_checkpoint, list_checkpoints
from ddpmkit.train.trainer import Trainer

STEPS, EVERY = 16, 2
TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=20", "--set", "sample.steps=5",
        "--set", "train.num_samples=2", "--set", "train.keep_checkpoints=2", "--batch-size", "8", "--no-progress"]
RUN = ["--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--sample-every", "1000", *TINY]
COMPARED = ("model.safetensors", "ema.safetensors", "state.safetensors", "state.json")


def final_files(run: Path, step: int = STEPS) -> dict[str, bytes]:
    folder = run / "checkpoints" / f"step_{step:09d}"
    return {name: (folder / name).read_bytes() for name in COMPARED}


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, bytes]:
    """The uninterrupted run every interrupted one must match bit for bit."""
    run = tmp_path_factory.mktemp("straight") / "run"
    assert main(["train", "--out", str(run), *RUN]) == 0
    return final_files(run)


def in_child(argv: list[str], log: Path, fault: str | None = None) -> int:
    """`ddpm train` in a fork of this process with DDPMKIT_FAULT = `fault`; its exit status (-9: SIGKILLed)."""
    if torch.get_num_threads() != 1:  # a fork of a process with OpenMP worker threads can deadlock
        pytest.skip("forking needs torch on one thread, as tests/conftest.py sets")
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            with open(log, "a") as out:
                try:
                    faults._hits.clear()  # counted per process, as in a fresh one
                    os.environ.pop(faults.ENV_VAR, None)
                    if fault:
                        os.environ[faults.ENV_VAR] = fault
                    code = main(argv)
                except BaseException:  # noqa: BLE001  (reported in the log; the child must not return)
                    traceback.print_exc(file=out)
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


SAVE_STAGES = {  # fault -> whether the checkpoint being saved is committed when the kill comes
    "save:weights@1": False,  # model.safetensors written, ema.safetensors not yet
    "save:before_fsync": False,
    "save:before_manifest": False,
    "save:before_rename": False,
    "save:after_rename": True,
    "save:prune": True,  # one old checkpoint renamed to .trash-*, not yet deleted
}


def kill_plan(rng: random.Random) -> list[tuple[str, int | None]]:
    """(fault kind, absolute step) in order: 10 kills after random steps, the 6 save stages at random places."""
    plan: list[tuple[str, int | None]] = [("train:step", k) for k in sorted(rng.sample(range(1, STEPS), 10))]
    for stage in rng.sample(list(SAVE_STAGES), len(SAVE_STAGES)):
        plan.insert(rng.randint(0, len(plan)), (stage, None))
    return plan


def test_sigkill_at_10_random_steps_and_every_stage_of_a_save_resumes_bit_exact(tmp_path, straight,
                                                                                  record_property):
    record_property("faults", 16)
    run, log = tmp_path / "run", tmp_path / "children.log"
    argv = ["train", "--out", str(run), "--resume", *RUN]
    plan = kill_plan(random.Random(7))
    resumed = 0  # the step of the newest valid checkpoint
    for kind, step in plan:
        if kind == "train:step":
            if step <= resumed:  # a save-stage kill moved past it: kill one step later instead
                step = resumed + 1
            fault, expect = f"train:step@{step - resumed}", EVERY * ((step - 1) // EVERY)
        else:
            fault, expect = kind, resumed + (EVERY if SAVE_STAGES[kind] else 0)
            if kind == "save:prune":  # keep_checkpoints=2: the first save that finds two older ones
                expect = max(expect, 3 * EVERY)
        code = in_child(argv, log, fault)
        assert code == -signal.SIGKILL, f"{fault}: exit {code}\n{log.read_text()[-3000:]}"
        ck, warnings = latest_valid_checkpoint(run / "checkpoints")
        # a half-written save never looks like a checkpoint, so nothing had to be skipped
        resumed = ck.step if ck is not None else 0  # killed before the first save: none yet
        assert warnings == [] and resumed == expect, (fault, warnings, resumed, expect)
    assert in_child(argv, log) == 0, log.read_text()[-3000:]
    assert [p.name for p in list_checkpoints(run / "checkpoints")][-1] == f"step_{STEPS:09d}"
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith((".tmp-", ".trash-"))]
    assert final_files(run) == straight
    record_property("faults_survived", 16)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_finishes_the_step_commits_and_resumes_bit_exact(tmp_path, straight, monkeypatch, capsys, sig,
                                                                record_property):
    record_property("faults", 1)
    run, step_of_signal = tmp_path / "run", 5
    train_step = Trainer._train_step

    def step_with_signal(self, step):
        if step == step_of_signal - 1:  # arrives in the middle of step 5
            os.kill(os.getpid(), sig)
        return train_step(self, step)

    monkeypatch.setattr(Trainer, "_train_step", step_with_signal)
    assert main(["train", "--out", str(run), *RUN]) == 128 + sig
    assert f"stopped by {sig.name} at step {step_of_signal}" in capsys.readouterr().out
    ck, warnings = latest_valid_checkpoint(run / "checkpoints")
    assert warnings == [] and ck.step == step_of_signal  # the step finished, then one more save, then out
    monkeypatch.undo()
    assert main(["train", "--out", str(run), "--resume", *RUN]) == 0
    assert final_files(run) == straight
    record_property("faults_survived", 1)


def test_k_non_finite_losses_stop_the_run_with_the_step_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch,
                                                                                          capsys, record_property):
    record_property("faults", 1)
    run, draw = tmp_path / "run", Trainer._draw

    def poisoned(self, step):
        x0, *rest = draw(self, step)
        return (x0 * math.nan if step >= 4 else x0, *rest)  # the losses of steps 5, 6, 7 are NaN

    monkeypatch.setattr(Trainer, "_draw", poisoned)
    assert main(["train", "--out", str(run), *RUN, "--set", "train.max_bad_losses=3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "training stopped at step 7: 3 non-finite losses in a row" in err
    ck, warnings = latest_valid_checkpoint(run / "checkpoints")
    assert warnings == [] and ck.step == 6
    good = load_file(str(run / "checkpoints" / "step_000000004" / "model.safetensors"))
    for name, tensor in ck.weights["model"].items():  # the skipped steps never touched the weights
        assert torch.isfinite(tensor).all() and torch.equal(tensor, good[name]), name
    record_property("faults_survived", 1)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_runs_stay_finite_and_timesteps_stay_int64(tmp_path, monkeypatch, precision):
    from ddpmkit.models.unet import UNet

    seen, losses = set(), []
    forward, train_step = UNet.forward, Trainer._train_step

    def recording_forward(self, x, t):
        seen.add(t.dtype)
        return forward(self, x, t)

    def recording_step(self, step):
        loss, applied = train_step(self, step)
        losses.append((loss, applied))
        return loss, applied

    monkeypatch.setattr(UNet, "forward", recording_forward)
    monkeypatch.setattr(Trainer, "_train_step", recording_step)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "4", "--checkpoint-every", "4", "--sample-every", "4",
                 *TINY, "--set", f'train.precision="{precision}"']) == 0
    assert seen == {torch.int64}
    assert len(losses) == 4 and all(math.isfinite(loss) and applied for loss, applied in losses)
    ck, _ = latest_valid_checkpoint(run / "checkpoints")
    for weights in ck.weights.values():
        assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_full_disk_during_a_save_stops_the_run_loudly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch,
                                                                                          capsys, record_property):
    record_property("faults", 1)
    from ddpmkit.store import checkpoint

    real_save, calls = checkpoint.st.save_file, []

    def full_on_the_second_save(tensors, filename, *args, **kwargs):
        calls.append(filename)
        if "step_000000004" in str(filename):
            raise OSError(28, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint.st, "save_file", full_on_the_second_save)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *RUN]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot save checkpoint" in err and "step_000000004" in err
    assert "No space left on device" in err
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_000000002"]
    assert latest_valid_checkpoint(run / "checkpoints")[0].step == 2
    record_property("faults_survived", 1)


def _plant(step_dir: Path, name: str, tensors: dict) -> None:
    """Replace a weights file and fix the manifest's hashes, as a tamperer would."""
    import hashlib
    import json

    from safetensors.torch import save_file

    save_file(tensors, str(step_dir / name))
    data = (step_dir / name).read_bytes()
    manifest = json.loads((step_dir / "manifest.json").read_text())
    manifest["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (step_dir / "manifest.json").write_text(json.dumps(manifest))


UNFIT = {  # a well-formed safetensors file that does not fit the model -> words in the error
    "missing tensor": (lambda w: {k: v for k, v in list(w.items())[1:]}, "1 missing key"),
    "wrong shape": (lambda w: {**w, next(iter(w)): torch.zeros(3, 1)}, "shape of"),
    "wrong dtype": (lambda w: {**w, next(iter(w)): w[next(iter(w))].to(torch.int32)}, "dtype of"),
}


def test_weights_that_do_not_fit_the_model_are_one_line_naming_the_file(tmp_path, capsys, record_property):
    record_property("corruptions", len(UNFIT))
    run = tmp_path / "run"
    args = ["--steps", "2", "--checkpoint-every", "2", "--sample-every", "1000", *TINY]
    assert main(["train", "--out", str(run), *args]) == 0
    step_dir = run / "checkpoints" / "step_000000002"
    original = load_file(str(step_dir / "model.safetensors"))
    for case, (change, words) in UNFIT.items():
        _plant(step_dir, "model.safetensors", change(dict(original)))
        capsys.readouterr()
        assert main(["train", "--out", str(run), "--resume", *args, "--steps", "4"]) == 2, case
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{step_dir}/model.safetensors does not fit the model" in err, err
        assert words in err, (case, err)
    record_property("corruptions_detected", len(UNFIT))
