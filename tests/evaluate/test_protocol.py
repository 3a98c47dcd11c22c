"""The protocol written with every number: eval's JSON says what each figure was measured with, and prints it."""

from __future__ import annotations

import hashlib
import json

import numpy as np

import ddpmkit
from ddpmkit.cli import main
from ddpmkit.evaluate.protocol import protocol_line, protocol_lines


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_figure_carries_its_protocol(tiny_eval, tmp_path, capsys):
    run, clf, out = tiny_eval["run"], tiny_eval["classifier"], tmp_path / "e.json"
    assert main(["eval", str(run), "--metrics", "nll,kid,pr", "--features", str(clf), "--n", "12", "--nll-n", "3",
                 "--steps", "3", "--seed", "7", "--json", str(out), "--no-progress", "--device", "cpu",
                 "--precision", "fp32"]) == 0
    result = json.loads(out.read_text())
    assert set(result["protocol"]) == {"nll", "kid", "pr"}
    kid = result["protocol"]["kid"]
    expected = {"ddpmkit": ddpmkit.__version__, "step": 0, "ema": True, "samples_from": "model", "steps": 3,
                "n": 12, "seed": 7, "guidance": None, "clip_denoised": True, "real_split": "test",
                "feature_weights_sha256": _sha256(clf), "real_size": result["n_real"], "precision": "fp32"}
    assert {k: kid[k] for k in expected} == expected
    assert kid["sampler"] == result["sampler"] and kid["nfe"] == result["nfe"] and kid["feature_network"]
    assert result["protocol"]["pr"] == kid  # the same samples and features: the same protocol
    nll = result["protocol"]["nll"]
    assert nll["precision"] == "fp32"  # the network's arithmetic moves every figure, the bound's too
    assert nll["n"] == 3 and nll["terms"] == 8 and nll["seed"] == 7 and "feature_network" not in nll
    assert np.isfinite(result["kid"]) and result["kid_subset_size"] == 12 and result["kid_std"] >= 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("protocol")]
    assert len(lines) == 2 and lines[0].startswith("protocol nll:") and lines[1].startswith("protocol kid,pr:")
    assert "NFE" in lines[1] and _sha256(clf)[:12] in lines[1] and "n 12, seed 7" in lines[1] and "weights, fp32)" in lines[1]


def test_a_sample_file_is_named_by_its_hash(tiny_eval, tmp_path):
    from ddpmkit.data import load_dataset

    np.savez(tmp_path / "s.npz", arr_0=load_dataset("digits", split="train").images[:10])
    out = tmp_path / "e.json"
    assert main(["eval", "--samples", str(tmp_path / "s.npz"), "--data", "digits", "--metrics", "kid",
                 "--features", str(tiny_eval["classifier"]), "--json", str(out), "--no-progress"]) == 0
    p = json.loads(out.read_text())["protocol"]["kid"]
    assert p["samples_sha256"] == _sha256(tmp_path / "s.npz") and p["n"] == 10 and "step" not in p
    assert "samples" in protocol_line(p) and p["samples_sha256"][:12] in protocol_line(p)


def test_protocol_lines_group_equal_protocols():
    a = {"ddpmkit": "x", "samples_from": "f.npz", "samples_sha256": "ab" * 32, "n": 3}
    assert protocol_lines({"fid": a, "kid": dict(a), "nll": {"ddpmkit": "x"}}) == [
        f"protocol fid,kid: samples f.npz (sha256 {'ab' * 6}), n 3 | ddpmkit x", "protocol nll: ddpmkit x"]
