"""Every progress bar is closed before an error is printed: the error is the last line a person sees."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np


def last_visible_line(stderr: str) -> str:
    """What a terminal shows last: the last line, and of it what follows the last carriage return."""
    lines = [line for line in stderr.split("\n") if line.strip()]
    return [part for part in lines[-1].split("\r") if part.strip()][-1]


def test_a_corrupt_image_is_the_last_line_not_the_decoding_bar(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "truncated.png").write_bytes((folder / "0.png").read_bytes()[:40])
    env = {**os.environ, "DDPMKIT_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-m", "ddpmkit.cli", "train", "--data", str(folder), "--out",
                          str(tmp_path / "run"), "--steps", "1", "--set", 'model.preset="tiny"'],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "decoding images" in out.stderr  # the bar was drawn, so the test can see where it ends up
    last = last_visible_line(out.stderr)
    assert last.startswith("ddpm train: error:") and "truncated.png" in last, out.stderr[-2000:]


def test_an_error_inside_the_training_bar_is_the_last_line(tmp_path, capsys, monkeypatch):
    """A user error raised while the train bar is open (here from the sample grid at step 1): the bar, held by the
    traceback, would otherwise be drawn again when the traceback is freed, after the error was printed."""
    from ddpmkit.cli import main
    from ddpmkit.errors import UserError
    from ddpmkit.train.trainer import Trainer

    def refuse(self):
        raise UserError("cannot write the sample grid (test)")

    monkeypatch.setattr(Trainer, "write_samples", refuse)
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--steps", "3", "--sample-every", "1",
                 "--set", 'model.preset="tiny"', "--set", "diffusion.timesteps=8", "--set", "sample.steps=2", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "train" in err.replace("ddpm train", "")  # the bar was drawn
    assert last_visible_line(err) == "ddpm train: error: cannot write the sample grid (test)", err[-1000:]


def test_close_bars_closes_what_is_open():
    from tqdm.auto import tqdm

    from ddpmkit.progress import close_bars

    bar = tqdm(total=3, disable=False)
    close_bars()
    assert bar.disable  # tqdm marks a closed bar disabled
    close_bars()  # nothing open: no effect

