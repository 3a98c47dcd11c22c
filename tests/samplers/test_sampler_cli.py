"""Every sampler from the command line, its one-line errors, and signals during a sample grid."""

import os
import signal

import pytest

from ddpmkit.cli import main
from ddpmkit.samplers import SAMPLERS, Sampler, loop
from ddpmkit.train.checkpoint import latest_valid_checkpoint

TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=20", "--set", "sample.steps=10",
        "--set", "train.num_samples=4", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("samplers") / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--checkpoint-every", "2", "--sample-every", "2",
                 *TINY]) == 0
    return out


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_ddpm_sample_with_every_sampler_says_its_nfe(run, tmp_path, capsys, sampler):
    assert main(["sample", str(run), "--n", "4", "--sampler", sampler, "--steps", "5", "--out",
                 str(tmp_path / "g.png"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"{sampler}, 5 steps" in out and f"{SAMPLERS[sampler].nfe(5)} NFE per sample" in out
    assert (tmp_path / "g.png").is_file()


def test_spacing_and_eta_from_the_command_line(run, tmp_path, capsys):
    for extra in (["--sampler", "ddim", "--eta", "1.0", "--spacing", "karras"], ["--sampler", "heun", "--spacing",
                                                                                  "uniform"]):
        assert main(["sample", str(run), "--n", "2", "--steps", "4", *extra, "--out", str(tmp_path / "g.png"),
                     "--no-progress"]) == 0
    assert "heun, 4 steps, uniform spacing, 7 NFE" in capsys.readouterr().out


@pytest.mark.parametrize("extra, words", [
    (["--sampler", "euler"], "--sampler: invalid choice: 'euler'"),
    (["--spacing", "even"], "--spacing: invalid choice: 'even'"),
    (["--steps", "0"], "sampling steps must be between 1 and T = 20, got 0"),
    (["--steps", "21"], "sampling steps must be between 1 and T = 20, got 21"),
    (["--sampler", "dpm++2m", "--eta", "0"], "--eta is for the ddim sampler only; 'dpm++2m' has no eta"),
    (["--sampler", "heun", "--eta", "0.5"], "--eta is for the ddim sampler only"),
    (["--sampler", "dpm++3m", "--steps", "2"], "'dpm++3m' is of order 3 and needs at least 3 steps, got 2"),
])
def test_bad_sampler_options_are_one_line_errors_with_exit_2(run, tmp_path, capsys, extra, words):
    for command in (["sample", str(run), "--n", "2", "--out", str(tmp_path / "g.png")],
                    ["eval", str(run), "--metrics", "fid", "--n", "2", "--json", str(tmp_path / "e.json")]):
        assert exit_code([*command, *extra, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def exit_code(argv) -> int:
    """main's return value, or the code of the SystemExit that argparse raises for a bad flag."""
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


def test_config_refuses_eta_for_another_sampler_and_too_few_steps(tmp_path, capsys):
    for sets, words in ((["sample.sampler=\"heun\"", "sample.eta=0.5"], "sample.eta = 0.5 is for sample.sampler"),
                        (["sample.sampler=\"dpm++3m\"", "sample.steps=2"], "needs at least 3 steps")):
        argv = ["train", "--out", str(tmp_path / "r"), "--dry-run"]
        for s in sets:
            argv += ["--set", s]
        assert main(argv) == 2
        assert words in capsys.readouterr().err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_the_final_sample_grid_is_honoured_at_once(tmp_path, monkeypatch, capsys, sig):
    calls = []
    inner = SAMPLERS["ancestral"]

    def step(*args):
        calls.append(1)
        if len(calls) == 3:  # in the middle of the grid after the last training step
            os.kill(os.getpid(), sig)
        return inner.step(*args)

    monkeypatch.setitem(loop.SAMPLERS, "ancestral", Sampler(step, stochastic=True, order=1))
    out = tmp_path / "run"
    code = main(["train", "--out", str(out), "--steps", "3", "--checkpoint-every", "100", "--sample-every", "100000",
                 *TINY, "--set", "sample.sampler=\"ancestral\"", "--set", "sample.steps=20"])
    assert code == 128 + sig
    assert len(calls) == 3  # not one sampling step after the signal
    assert f"stopped by {sig.name} at step 3" in capsys.readouterr().out
    ck, warnings = latest_valid_checkpoint(out / "checkpoints")
    assert warnings == [] and ck.step == 3  # saved before the grid: nothing lost
    assert not (out / "samples.png").exists()


def test_sample_every_0_draws_no_grid_at_all(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--steps", "2", "--sample-every", "0", *TINY]) == 0
    assert not (out / "samples.png").exists() and not (out / "samples").exists()
    assert "samples none (--sample-every 0)" in capsys.readouterr().out
