"""`ddpm sample` and `ddpm eval` as long jobs, end to end: the same images with any batch size and under torchrun
with 2 processes, SIGKILL at random moments and the same command again (bit-exact), eval's JSON after each metric,
and eval of the written .npz giving eval's own FID."""

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit import UNet
from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.store import write_run

TORCHRUN = Path(sys.executable).with_name("torchrun")
needs_torchrun = pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
QUIET = ["--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny random-weight run (T = 20) and a small digits classifier as the feature space."""
    root = tmp_path_factory.mktemp("jobs")
    config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 20, "sample.steps": 5})
    torch.manual_seed(0)
    net = UNet.from_preset("tiny")
    write_run(root / "run", config, {"image_size": 8, "channels": 1, "data": {"name": "digits"}},
              {"model": net.state_dict(), "ema": net.state_dict()})
    assert main(["train-classifier", "--data", "digits", "--out", str(root / "clf.safetensors"), "--steps", "20",
                 "--no-progress"]) == 0
    return root


def sample_args(root, npz, n, batch_size):
    return ["sample", str(root / "run"), "--n", str(n), "--batch-size", str(batch_size), "--sampler", "ancestral",
            "--npz", str(npz), "--out", str(npz.with_suffix(".png")), *QUIET]


def cli(args, env=None, torchrun=False) -> subprocess.CompletedProcess:
    head = [sys.executable, "-m", "ddpmkit.cli"]
    if torchrun:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # "--" keeps torchrun's own parser from reading ddpm's --n as an abbreviation of --nnodes
        head = [str(TORCHRUN), "--nproc_per_node", "2", "--master_port", str(port), "-m", "ddpmkit.cli", "--"]
    return subprocess.run(head + args, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def images(path):
    with np.load(path) as f:
        return f["arr_0"]


@pytest.fixture(scope="module")
def reference(root):
    """40 images in one batch, in this process."""
    assert main(sample_args(root, root / "ref.npz", 40, 40)) == 0
    return images(root / "ref.npz")


@needs_torchrun
def test_the_same_images_with_any_batch_size_and_two_processes(root, reference, tmp_path):
    assert main(sample_args(root, tmp_path / "b3.npz", 40, 3)) == 0
    assert np.array_equal(images(tmp_path / "b3.npz"), reference)
    proc = cli(sample_args(root, tmp_path / "two.npz", 40, 7), torchrun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert np.array_equal(images(tmp_path / "two.npz"), reference)
    assert proc.stdout.count("wrote") == 2  # rank 0 alone writes
    assert not (tmp_path / "two.npz.shards").exists() and not (tmp_path / "b3.npz.shards").exists()


def test_sigkill_at_random_moments_and_the_same_command_again_is_bit_exact(root, reference, tmp_path):
    rng = random.Random()
    out, args = tmp_path / "k.npz", sample_args(root, tmp_path / "k.npz", 40, 4)  # 10 shards
    shards, done, log = tmp_path / "k.npz.shards", 0, []
    for _ in range(2):  # killed right after its k-th new shard: the work lost is the batch in flight, if any
        k = rng.randint(1, 3)
        log.append(f"fault after shard {k}")
        proc = cli(args, env={"DDPMKIT_FAULT": f"jobs:shard@{k}"})
        assert proc.returncode == -signal.SIGKILL, (log, proc.stderr[-2000:])
        now = len(list(shards.glob("*/*.npz")))
        assert now == done + k, log
        done = now
    delay = rng.uniform(0.0, 1.5)  # and once at a moment chosen by the clock, not by the program
    log.append(f"SIGKILL {delay:.2f} s after the first new shard")
    proc = subprocess.Popen([sys.executable, "-m", "ddpmkit.cli", *args], stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(shards.glob("*/*.npz"))) == done and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # the kill may even come after the .npz is in place, while the shards are being removed
    final = cli(args)
    assert final.returncode == 0, (log, final.stderr[-2000:])
    assert np.array_equal(images(out), reference), log
    assert not shards.exists(), log


def eval_args(root, out, batch_size, metrics="nll,fid,pr"):
    return ["eval", str(root / "run"), "--metrics", metrics, "--features", str(root / "clf.safetensors"), "--n",
            "32", "--nll-n", "6", "--steps", "4", "--batch-size", str(batch_size), "--json", str(out), *QUIET]


MEASURED = ("nll_bpd", "nll_bpd_sem", "prior_bpd", "decoder_bpd", "diffusion_bpd_by_quarter", "fid", "precision",
            "recall", "n", "nll_n")


@pytest.fixture(scope="module")
def one_process(root):
    assert main(eval_args(root, root / "one" / "eval.json", 32)) == 0
    return json.loads((root / "one" / "eval.json").read_text())


@needs_torchrun
def test_eval_under_torchrun_matches_one_process(root, one_process, tmp_path):
    # the same batch size, so the feature network sees the same batches (its arithmetic may depend on the batch)
    proc = cli(eval_args(root, tmp_path / "eval.json", 32), torchrun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((tmp_path / "eval.json").read_text())
    assert {k: two[k] for k in MEASURED} == {k: one_process[k] for k in MEASURED}
    assert not (tmp_path / "eval.json.shards").exists()


def test_eval_of_the_sampled_npz_gives_eval_s_own_fid(root, one_process, tmp_path):
    npz = tmp_path / "s.npz"
    assert main(["sample", str(root / "run"), "--n", "32", "--steps", "4", "--npz", str(npz), "--out",
                 str(tmp_path / "s.png"), "--batch-size", "5", *QUIET]) == 0
    assert main(["eval", "--samples", str(npz), "--data", "digits", "--metrics", "fid,pr", "--features",
                 str(root / "clf.safetensors"), "--json", str(tmp_path / "e.json"), *QUIET]) == 0
    got = json.loads((tmp_path / "e.json").read_text())
    assert (got["fid"], got["precision"], got["recall"]) == tuple(one_process[k] for k in ("fid", "precision", "recall"))


def test_each_metric_is_in_the_json_as_soon_as_known_and_a_rerun_reuses_the_shards(root, one_process, tmp_path,
                                                                                     monkeypatch):
    from ddpmkit import jobs
    from ddpmkit.evaluate import run

    def broken(ctx):
        raise RuntimeError("pr failed")

    out = tmp_path / "eval.json"
    with monkeypatch.context() as m:
        m.setitem(run.RUNNERS, "pr", broken)
        with pytest.raises(RuntimeError, match="pr failed"):
            main(eval_args(root, out, 8))
    partial = json.loads(out.read_text())
    assert partial["nll_bpd"] == one_process["nll_bpd"] and partial["fid"] == one_process["fid"]
    assert "precision" not in partial and len(list((tmp_path / "eval.json.shards").glob("*/*.npz"))) == 1 + 4
    written = []
    monkeypatch.setattr(jobs, "write_shard", lambda *a: written.append(a))
    assert main(eval_args(root, out, 8)) == 0
    assert written == [] and json.loads(out.read_text())["precision"] == one_process["precision"]
    assert not (tmp_path / "eval.json.shards").exists()
