"""Every metric's requirements are checked before any work starts: one line, exit 2, no network evaluated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiny_runs import write_tiny_run
from ddpmkit.cli import main


@pytest.fixture
def no_network(monkeypatch):
    """Any forward pass of the diffusion network or a feature network fails the test."""
    from ddpmkit.evaluate.classifier import ClassifierFeatures
    from ddpmkit.models.unet import UNet

    def boom(*args, **kwargs):
        raise AssertionError("a network ran before the request was refused")

    monkeypatch.setattr(UNet, "forward", boom)
    monkeypatch.setattr(ClassifierFeatures, "__call__", boom)
    monkeypatch.setattr("ddpmkit.evaluate.nll.bits_per_dim", boom)
    monkeypatch.delenv("DDPMKIT_INCEPTION", raising=False)


def _refused(capsys, argv: list[str], *words: str) -> str:
    assert main(["eval", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, err
    return err


def test_the_reported_defect_nll_pr_memo_without_features_is_refused_first(tiny_eval, tmp_path, capsys, no_network):
    """`ddpm eval RUN --metrics nll,pr,memo` with neither --features nor Inception: refused before the bound."""
    _refused(capsys, [str(tiny_eval["run"]), "--metrics", "nll,pr,memo", "--json", str(tmp_path / "e.json")],
             "--metrics pr", "--features", "--inception")
    assert not (tmp_path / "e.json").exists()


def test_inception_named_but_missing(tiny_eval, tmp_path, capsys, no_network, monkeypatch):
    _refused(capsys, [str(tiny_eval["run"]), "--metrics", "nll,kid", "--inception", str(tmp_path / "none.st")],
             "--inception", "none.st")
    monkeypatch.setenv("DDPMKIT_INCEPTION", str(tmp_path / "gone.safetensors"))
    _refused(capsys, [str(tiny_eval["run"]), "--metrics", "fid"], "$DDPMKIT_INCEPTION", "gone.safetensors")


@pytest.mark.parametrize("extra, words", [
    (["--metrics", "nll,bogus"], ["bogus", "unknown", "kid"]),
    (["--metrics", "nll,acc"], ["--metrics acc", "--features"]),
    (["--metrics", "nll,memo", "--split", "train"], ["--split test"]),
    (["--metrics", "nll,fid", "--features", "FEATURES", "--n", "1"], ["--n", "at least 2"]),
    (["--metrics", "nll", "--features", "missing.safetensors"], ["--features", "no such file"]),
    (["--metrics", "nll", "--data", "no/such/folder"], ["--data", "no such file or folder"]),
    (["--metrics", "nll", "--class", "3"], ["--class", "unconditional"]),
    (["--metrics", "nll,acc", "--features", "FEATURES"], ["--metrics acc", "conditional run"]),
    (["--metrics", "nll,kid", "--features", "FEATURES", "--steps", "99"], ["sampling steps", "T = 8"]),
])
def test_each_requirement_is_one_line_before_any_work(tiny_eval, tmp_path, capsys, no_network, extra, words):
    extra = [str(tiny_eval["classifier"]) if e == "FEATURES" else e for e in extra]
    _refused(capsys, [str(tiny_eval["run"]), *extra, "--json", str(tmp_path / "e.json")], *words)


def test_sample_files_and_run_directories(tiny_eval, tmp_path, capsys, no_network):
    clf = str(tiny_eval["classifier"])
    _refused(capsys, [str(tmp_path / "no-run"), "--metrics", "fid", "--features", clf], "no-run", "no such directory")
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((8, 8, 8, 1), np.uint8))
    _refused(capsys, ["--samples", str(tmp_path / "s.npz"), "--data", "digits", "--metrics", "nll"],
             "--metrics nll", "RUN_DIR")
    _refused(capsys, ["--samples", str(tmp_path / "s.npz"), "--data", "digits", "--metrics", "acc",
                      "--features", clf], "arr_1")
    _refused(capsys, ["--samples", str(tmp_path / "none.npz"), "--data", "digits", "--metrics", "fid",
                      "--features", clf], "--samples", "no such file")


def test_a_conditional_run_passes_the_label_check(tiny_eval, tmp_path):
    from ddpmkit.evaluate.requirements import check_request
    from ddpmkit.evaluate.run import EvalRequest

    run = write_tiny_run(tmp_path / "cond", classes=["a", "b"])
    check_request(EvalRequest(data=None, run_dir=run, metrics=("acc",), features=tiny_eval["classifier"],
                              classes="a", guidance=1.0))


def test_a_good_request_still_runs(tiny_eval, tmp_path, capsys):
    """The checks refuse nothing that works: kid and pr in classifier space on the tiny run."""
    torch.manual_seed(0)
    assert main(["eval", str(tiny_eval["run"]), "--metrics", "kid,pr", "--features", str(tiny_eval["classifier"]),
                 "--n", "16", "--json", str(tmp_path / "e.json"), "--no-progress", "--device", "cpu"]) == 0


def test_every_metric_that_is_checked_has_a_runner_and_the_reverse():
    """check_request is the only refusal of an unknown metric, so its table and evaluate()'s runners must agree."""
    from ddpmkit.evaluate.requirements import METRIC_NEEDS, METRICS
    from ddpmkit.evaluate.run import RUNNERS

    assert set(METRIC_NEEDS) == set(RUNNERS) == set(METRICS)
