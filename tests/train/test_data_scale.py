"""Training from the decoded-image cache (issue 15): the same batches and the same weights as from memory, with or
without prefetch; two torchrun processes build the cache once and train as one process does; only rank 0 reports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpmkit.cli import main
from ddpmkit.config import RunConfig
from ddpmkit.data.cache import ImageCache
from ddpmkit.train.prefetch import Prefetcher
from ddpmkit.train.trainer import Trainer

TINY = ["--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=20", "--set", "sample.steps=5",
        "--set", "train.num_samples=2", "--set", "data.hflip=true", "--batch-size", "8", "--no-progress"]
RUN = ["--steps", "6", "--checkpoint-every", "3", "--sample-every", "100", "--image-size", "8", *TINY]
COMPARED = ("model.safetensors", "ema.safetensors", "state.safetensors")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """36 PNGs of two sizes (so --image-size resizes), a third of them grey."""
    root = tmp_path_factory.mktemp("data") / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(36):
        img = Image.fromarray(rng.integers(0, 256, (10 + i % 2 * 4, 12, 3), dtype=np.uint8))
        (img.convert("L") if i % 3 == 0 else img).save(root / f"{i:03d}.png")
    return root


def final(run: Path, step: int = 6) -> dict[str, bytes]:
    return {name: (run / "checkpoints" / f"step_{step:09d}" / name).read_bytes() for name in COMPARED}


def test_batches_from_the_cache_are_those_from_memory(tmp_path, folder):
    config = RunConfig().with_values({"data.spec": str(folder), "data.image_size": 8, "data.hflip": True,
                                      "train.batch_size": 8, "model.preset": "tiny", "diffusion.timesteps": 20})
    memory = Trainer(config, tmp_path / "a", progress=False, cache=None, prefetch=0)
    cached = Trainer(config, tmp_path / "b", progress=False, cache=ImageCache(tmp_path / "cache", progress=False))
    assert isinstance(cached.data.images, np.memmap) and not isinstance(memory.data.images, np.memmap)
    try:
        for step in [0, 1, 2, 7, 3, 40]:  # epochs straddled, and a jump back (a resume) and forward
            a, b = memory._draw(step), cached._draw(step)
            for x, y in zip(a[:3], b[:3]):
                assert torch.equal(x, y), step
    finally:
        cached.batches.close()


def test_a_short_run_from_the_cache_is_bit_identical_to_memory_with_and_without_prefetch(tmp_path, folder):
    cache = str(tmp_path / "cache")
    runs = {"memory": ["--no-cache"], "cache": ["--cache", cache], "cache, no prefetch": ["--cache", cache,
                                                                                          "--prefetch", "0"]}
    for name, flags in runs.items():
        assert main(["train", "--data", str(folder), "--out", str(tmp_path / name), *RUN, *flags]) == 0
    reference = final(tmp_path / "memory")
    for name in runs:
        assert final(tmp_path / name) == reference, name


def test_resume_from_the_cache_is_bit_identical(tmp_path, folder):
    cache = ["--cache", str(tmp_path / "cache")]
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "straight"), *RUN, *cache]) == 0
    half = [a if a != "6" else "3" for a in RUN]  # --steps 3
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "resumed"), *half, *cache]) == 0
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "resumed"), *RUN, *cache, "--resume"]) == 0
    assert final(tmp_path / "resumed") == final(tmp_path / "straight")


def test_the_prefetcher_returns_each_steps_fetch_in_any_order_of_steps():
    calls = []

    def fetch(step):
        calls.append(step)
        if step == 99:
            raise ValueError("bad step")
        return step * 10

    pre = Prefetcher(fetch, depth=2, end=8)
    try:
        assert [pre.get(s) for s in (0, 1, 2, 5, 6, 7, 3)] == [0, 10, 20, 50, 60, 70, 30]
        assert max(calls) == 7  # nothing fetched at or past `end`
        with pytest.raises(ValueError, match="bad step"):
            pre.get(99)
    finally:
        pre.close()
    assert Prefetcher(fetch, depth=0).get(4) == 40


def test_a_failing_rank_names_itself(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--out", "x", "--prefetch", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm train: error: rank 1: --prefetch -1") and err.count("\n") == 1, err


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_two_torchrun_processes_build_the_cache_once_and_train_as_one_process(tmp_path, folder):
    cache = tmp_path / "cache"
    run = [*RUN, "--set", 'train.precision="fp32"']  # bf16: each rank rounds its half batch its own way
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "ddpmkit.cli", "train", "--data",
           str(folder), "--out", str(tmp_path / "two"), "--cache", str(cache), *run]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DDPMKIT_FAULT")}, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("building the image cache") == 1, proc.stderr[-3000:]  # one builder
    closing = [line for line in proc.stdout.splitlines() if line.startswith("trained to step")]
    assert len(closing) == 1 and "checkpoint None" not in closing[0], proc.stdout  # rank 0 alone reports
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] and not list(cache.glob("*failed*"))
    # one process, from memory, makes the same weights (up to the all-reduce's summation order)
    assert main(["train", "--data", str(folder), "--out", str(tmp_path / "one"), *run, "--no-cache"]) == 0
    from safetensors.numpy import load_file

    one = load_file(str(tmp_path / "one/checkpoints/step_000000006/model.safetensors"))
    two = load_file(str(tmp_path / "two/checkpoints/step_000000006/model.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        assert np.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k
