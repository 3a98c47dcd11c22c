"""`ddpm eval` end to end on a tiny run, and its one-line errors."""

import json

import numpy as np
import pytest

from ddpmkit.cli import main

TINY = ["--set", "model.preset=\"tiny\"", "--set", "diffusion.timesteps=20", "--set", "sample.steps=10", "--set", "train.num_samples=4",
        "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def run_and_classifier(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    assert main(["train", "--out", str(root / "run"), "--steps", "4", "--checkpoint-every", "4",
                 "--sample-every", "4", *TINY]) == 0
    assert main(["train-classifier", "--data", "digits", "--out", str(root / "clf.safetensors"), "--steps", "30",
                 "--no-progress"]) == 0
    return root


def test_eval_writes_every_metric(run_and_classifier, capsys):
    root = run_and_classifier
    out = root / "eval.json"
    assert main(["eval", str(root / "run"), "--metrics", "nll,fid,is,pr,memo", "--features",
                 str(root / "clf.safetensors"), "--n", "32", "--nll-n", "8", "--steps", "5", "--json", str(out),
                 "--no-progress"]) == 0
    result = json.loads(out.read_text())
    for key in ("nll_bpd", "fid", "is_mean", "is_std", "precision", "recall", "memorisation", "checkpoint", "ema",
                "sampler", "steps", "n", "feature_extractor", "feature_space_note", "prior_bpd", "decoder_bpd",
                "diffusion_bpd_by_quarter"):
        assert key in result, key
    assert result["n"] == 32 and result["nll_n"] == 8 and result["steps"] == 5 and result["ema"] is True
    assert np.isfinite(result["nll_bpd"]) and result["fid"] >= 0 and 0 <= result["precision"] <= 1
    assert (root / "nll_terms.npz").is_file() and (root / "memorisation_pairs.png").is_file()
    assert "feature space" in capsys.readouterr().out


def test_eval_of_a_sample_file(run_and_classifier, tmp_path):
    root = run_and_classifier
    from ddpmkit.data import load_dataset

    samples = load_dataset("digits", split="train").images[:64]
    np.savez(tmp_path / "s.npz", arr_0=samples)
    out = tmp_path / "e.json"
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "digits", "--metrics", "fid,pr",
                 "--features", str(root / "clf.safetensors"), "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["samples_from"].endswith("s.npz") and result["n"] == 64


@pytest.mark.parametrize("array, words", [
    (np.zeros((4, 8, 8, 1), np.float32), ["float32", "uint8"]),
    (np.zeros((4, 8, 8), np.uint8), ["shape", "(N, 8, 8, 1)"]),
    (np.zeros((4, 16, 16, 1), np.uint8), ["shape"]),
])
def test_a_bad_sample_file_gets_one_line(run_and_classifier, tmp_path, capsys, array, words):
    np.savez(tmp_path / "bad.npz", arr_0=array)
    assert main(["eval", "--samples", str(tmp_path / "bad.npz"), "--data", "digits", "--metrics", "fid",
                 "--features", str(run_and_classifier / "clf.safetensors"), "--json", str(tmp_path / "e.json"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.npz" in err
    for w in words:
        assert w in err


def test_data_of_another_size_than_the_model_is_refused(run_and_classifier, tmp_path, capsys):
    np.savez(tmp_path / "big.npz", arr_0=np.zeros((40, 16, 16, 1), np.uint8))
    assert main(["eval", str(run_and_classifier / "run"), "--data", str(tmp_path / "big.npz"), "--split", "train",
                 "--metrics", "nll", "--json", str(tmp_path / "e.json"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "16x16" in err and "8x8" in err


def test_unknown_metric_and_missing_inception(run_and_classifier, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DDPMKIT_INCEPTION", raising=False)
    assert main(["eval", str(run_and_classifier / "run"), "--metrics", "fid,bogus", "--no-progress",
                 "--json", str(tmp_path / "e.json")]) == 2
    assert "bogus" in capsys.readouterr().err
    assert main(["eval", str(run_and_classifier / "run"), "--metrics", "fid", "--n", "4", "--steps", "2",
                 "--no-progress", "--json", str(tmp_path / "e.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--inception" in err
