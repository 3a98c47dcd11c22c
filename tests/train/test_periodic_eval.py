"""Evaluation during training (train.eval_every): KID/FID/PR rows in metrics.jsonl and TensorBoard at the steps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from ddpmkit.cli import main

TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=8", "--set", "sample.steps=2",
        "--batch-size", "8", "--no-progress", "--sample-every", "0"]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from ddpmkit.data import load_dataset
    from ddpmkit.evaluate.classifier import train_classifier

    path = tmp_path_factory.mktemp("clf") / "clf.safetensors"
    train_classifier(load_dataset("digits", split="train"), path, steps=20, width=8, feature_dim=16, progress=False)
    return path


def test_eval_rows_at_every_eval_step_and_the_last(tmp_path, classifier, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--out", str(run), "--steps", "5", *TINY,
                 "--set", "train.eval_every=2", "--set", "train.eval_n=12", "--set", "train.eval_metrics=kid,fid,pr",
                 "--set", f'train.eval_features="{classifier}"', "--set", "train.log_every=1"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4, 5]
    for r in evals:
        assert set(r["eval"]) == {"kid", "kid_std", "fid", "precision", "recall"} and r["eval_n"] == 12
        assert r["eval"]["fid"] >= 0 and 0 <= r["eval"]["precision"] <= 1 and r["eval_features"].startswith("clas")
    assert sum("loss" in r for r in rows) == 5  # the loss lines are all still there
    assert "eval at step 4: kid" in capsys.readouterr().out
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(run / "tb")).Reload()
    assert [e.step for e in tb.Scalars("eval/kid")] == [2, 4, 5]
    assert tb.Scalars("eval/fid")[-1].value == pytest.approx(evals[-1]["eval"]["fid"], rel=1e-6)


def test_missing_feature_network_is_refused_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DDPMKIT_INCEPTION", raising=False)
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--steps", "2", *TINY,
                 "--set", "train.eval_every=1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.eval_features" in err and "DDPMKIT_INCEPTION" in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("key, value, words", [
    ("train.eval_metrics", "kid,is", "'is' is not allowed"),
    ("train.eval_n", "3", "at least 4"),  # pr needs k + 1 = 4
])
def test_bad_eval_keys_are_one_line(tmp_path, capsys, key, value, words):
    extra = ["--set", "train.eval_metrics=pr"] if key == "train.eval_n" else []
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--steps", "2", *TINY, *extra,
                 "--set", f"{key}={value}"]) == 2
    assert words in capsys.readouterr().err


def test_the_training_images_measured_against_themselves(classifier):
    """Exact answers: the real subset as the samples gives FID 0 and precision = recall = 1."""
    from ddpmkit.data import load_dataset
    from ddpmkit.train.periodic_eval import PeriodicEval

    data = load_dataset("digits", split="train")
    train = SimpleNamespace(eval_every=1, eval_n=40, eval_metrics=["fid", "pr"], eval_features=str(classifier),
                            seed=3, steps=1)
    trainer = SimpleNamespace(config=SimpleNamespace(train=train), dist=SimpleNamespace(is_main=True), data=data)
    pe = PeriodicEval(trainer)
    pick = np.sort(np.random.default_rng(3).permutation(len(data))[:40])
    out = pe.measure(data.images[pick])
    assert out["fid"] == pytest.approx(0.0, abs=1e-6) and out["precision"] == 1.0 and out["recall"] == 1.0
    other = pe.measure(data.images[np.setdiff1d(np.arange(len(data)), pick)[:40]])
    assert other["fid"] > 1e-3
