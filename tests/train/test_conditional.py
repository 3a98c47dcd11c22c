"""Class-conditional runs end to end: train, resume bit-exact, sample --per-class / --guidance, eval acc, and every
user mistake of the issue as one line with exit code 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddpmkit.cli import main
from ddpmkit.config import load_config
from ddpmkit.guidance import NO_CLASS

TINY = ["--set", "model.preset=\"tiny\"", "--set", "diffusion.timesteps=20", "--set", "sample.steps=10",
        "--set", "train.num_samples=4", "--set", "train.log_every=5", "--batch-size", "16", "--no-progress"]


def ddpm(*args, env=None):
    full_env = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "ddpmkit.cli", *args], capture_output=True, text=True,
                          env=full_env, timeout=600)


def one_line_error(capsys, *words):
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


@pytest.fixture(scope="module")
def labelled_npz(tmp_path_factory) -> str:
    """32 random 8x8 images in 3 classes: the workers skip scikit-learn's import."""
    path = tmp_path_factory.mktemp("data") / "labelled.npz"
    rng = np.random.default_rng(0)
    np.savez(path, images=rng.integers(0, 256, (32, 8, 8), dtype=np.uint8), labels=np.arange(32) % 3)
    return str(path)


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cond") / "run"
    assert main(["train", "--out", str(run), "--conditional", "--steps", "6", "--checkpoint-every", "3",
                 "--sample-every", "6", *TINY]) == 0
    return run


def test_a_conditional_run_saves_its_classes_and_samples_per_class_with_guidance(cond_run, tmp_path, capsys):
    classes = json.loads((cond_run / "classes.json").read_text())
    assert classes["names"] == [str(i) for i in range(10)] and sum(classes["counts"]) == 1500
    assert "num_classes = 10" in (cond_run / "config.toml").read_text()
    npz, grid = tmp_path / "s.npz", tmp_path / "grid.png"
    assert main(["sample", str(cond_run), "--per-class", "2", "--guidance", "2", "--npz", str(npz), "--out",
                 str(grid), "--no-progress"]) == 0
    with np.load(npz) as f:
        assert f["arr_0"].shape == (20, 8, 8, 1) and f["arr_1"].tolist() == [i // 2 for i in range(20)]
    assert grid.is_file()
    assert main(["sample", str(cond_run), "--class", "0,7", "--n", "5", "--npz", str(npz), "--out", str(grid),
                 "--no-progress"]) == 0
    with np.load(npz) as f:
        assert f["arr_1"].tolist() == [0, 7, 0, 7, 0]  # cycled
    assert capsys.readouterr().out.count("guidance w = 2") == 1  # said for the guided draw only


def test_python_api_samples_classes_with_guidance(cond_run):
    import ddpmkit

    pipe = ddpmkit.load(cond_run, ema=False)  # 6 steps: the EMA is still close to the zero-initialised output
    assert pipe.sample(4, classes=[3] * 4, guidance=2.0, steps=5).shape == (4, 8, 8, 1)
    a = pipe.sample(4, classes=[3] * 4, guidance=2.0, steps=5, return_tensor=True)
    b = pipe.sample(4, classes=[3] * 4, guidance=0.0, steps=5, return_tensor=True)
    assert not torch.equal(a, b)  # guidance changes the samples
    assert torch.equal(pipe.sample(4, classes=3, steps=5, return_tensor=True), b)  # one class for all = the list
    labels = pipe.labels(2000, None, seed=0)  # the default: the training data's proportions
    counts = np.bincount(labels, minlength=10) / 2000
    assert np.abs(counts - np.array(pipe.class_counts) / 1500).max() < 0.035


def test_label_dropout_feeds_the_no_class_token_at_the_rate(cond_run):
    from ddpmkit.train.trainer import Trainer

    config = load_config("digits").with_values({"model.preset": "tiny", "diffusion.timesteps": 20,
                                                "sample.steps": 10, "train.batch_size": 100,
                                                "train.label_dropout": 0.2})
    trainer = Trainer(config, cond_run.parent / "unused", conditional=True, progress=False)
    ys = [trainer._net_for(step).y for step in range(50)]
    y = torch.cat(ys)
    rate = float((y == NO_CLASS).double().mean())
    assert abs(rate - 0.2) < 0.03  # 3 standard errors at 5000 labels: 0.017
    kept = torch.cat([trainer.labels[trainer.order.indices(s)] for s in range(50)])
    assert torch.equal(y[y != NO_CLASS], kept[y != NO_CLASS])  # the others are the images' own labels
    assert torch.equal(trainer._net_for(7).y, ys[7])  # seeded by (seed, step)
    # one step trains the rows of the labels it saw, the no-class row included (Adam moves no unused row)
    for step in (0, 1):  # conv_out and each conv2 start at zero: two steps before a gradient reaches the embedding
        trainer._train_step(step)
    before = trainer.model.class_emb.weight.detach().clone()
    trainer._train_step(2)
    moved = (trainer.model.class_emb.weight.detach() - before).abs().sum(1) > 0  # (K + 1,)
    seen = set(ys[2].tolist())
    assert NO_CLASS in seen and moved[-1]
    assert moved[:-1].tolist() == [c in seen for c in range(10)]


def test_conditional_run_resumes_bit_exact(tmp_path, labelled_npz):
    common = ["--data", labelled_npz, "--conditional", "--steps", "8", "--checkpoint-every", "4",
              "--sample-every", "100", *TINY]
    assert ddpm("train", "--out", str(tmp_path / "straight"), *common).returncode == 0
    killed = ddpm("train", "--out", str(tmp_path / "killed"), *common, env={"DDPMKIT_FAULT": "train:step@6"})
    assert killed.returncode == -9
    resumed = ddpm("train", "--out", str(tmp_path / "killed"), "--resume", *common)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("model.safetensors", "ema.safetensors", "state.safetensors"):
        ckpt = Path("checkpoints") / "step_000000008" / name
        assert (tmp_path / "killed" / ckpt).read_bytes() == (tmp_path / "straight" / ckpt).read_bytes(), name


def test_every_run_says_its_config_network_and_projected_time(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--steps", "8", "--sample-every", "100", *TINY]) == 0
    out = capsys.readouterr().out
    assert "config: preset digits" in out and "network: UNet preset tiny at 8x8x1" in out
    assert "parameters" in out and "s/step over steps 2-6" in out and "remaining 2 steps" in out


def test_without_config_the_data_picks_its_preset_or_sizes_the_net(tmp_path, capsys):
    if Path("/usr/share/datasets/fashion-mnist").is_dir():
        assert main(["train", "--data", "fashion-mnist", "--out", str(tmp_path / "f"), "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert "preset fashion_mnist" in out and 'preset = "mnist28"' in out
    path = tmp_path / "16.npz"
    np.savez(path, images=np.zeros((20, 16, 16, 3), np.uint8))
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "s"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sized to the 16x16 images" in out and "ch_mult = [1, 2, 2]" in out and "attn_resolutions = [8]" in out


def test_eval_reads_the_labels_of_samples_and_measures_acc(cond_run, tmp_path, capsys):
    clf = tmp_path / "clf.safetensors"
    assert main(["train-classifier", "--data", "digits", "--out", str(clf), "--steps", "30", "--no-progress"]) == 0
    npz = tmp_path / "s.npz"
    assert main(["sample", str(cond_run), "--n", "20", "--class", "1,2", "--npz", str(npz), "--out",
                 str(tmp_path / "g.png"), "--no-progress"]) == 0
    out = tmp_path / "eval.json"
    assert main(["eval", "--samples", str(npz), "--data", "digits", "--metrics", "acc", "--features", str(clf),
                 "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["acc"] <= 1 and set(result["acc_per_class"]) == {"1", "2"}
    assert main(["eval", str(cond_run), "--metrics", "acc,fid,nll", "--features", str(clf), "--n", "20",
                 "--nll-n", "8", "--guidance", "1", "--class", "4", "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert set(result["acc_per_class"]) == {"4"} and result["guidance"] == 1.0 and "conditional" in result["nll_note"]
    capsys.readouterr()
    np.savez(npz, np.zeros((3, 8, 8, 1), np.uint8))  # no arr_1: acc has nothing to compare with
    assert main(["eval", "--samples", str(npz), "--data", "digits", "--metrics", "acc", "--features", str(clf),
                 "--json", str(out), "--no-progress"]) == 2
    one_line_error(capsys, "arr_1")


def test_eval_nll_with_an_npz_of_only_arr_0(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "2", "--sample-every", "100", *TINY]) == 0
    from ddpmkit.data import load_dataset

    test = tmp_path / "test_images.npz"
    np.savez(test, load_dataset("digits", split="test").images[:8])
    assert main(["eval", str(run), "--data", str(test), "--metrics", "nll", "--nll-n", "8", "--json",
                 str(tmp_path / "e.json"), "--no-progress"]) == 0


# --- user mistakes: one line, exit 2 --------------------------------------------------------------------------


def test_conditional_on_data_without_labels(tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((32, 8, 8), np.uint8))
    assert main(["train", "--data", str(path), "--conditional", "--out", str(tmp_path / "r"), *TINY]) == 2
    one_line_error(capsys, "--conditional", "has no labels", "class")


def test_labels_that_do_not_match_the_images(tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, images=np.zeros((32, 8, 8), np.uint8), labels=np.arange(30))
    assert main(["train", "--data", str(path), "--conditional", "--out", str(tmp_path / "r"), *TINY]) == 2
    one_line_error(capsys, "x.npz", "32 integer labels")


def test_an_empty_class_subfolder(tmp_path, capsys, save_image=None):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "d" / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "d" / cls / f"{i}.png")
    (tmp_path / "d" / "c").mkdir()
    assert main(["train", "--data", str(tmp_path / "d"), "--conditional", "--out", str(tmp_path / "r"), *TINY]) == 2
    one_line_error(capsys, "'c'", "no images")


def test_resuming_with_another_set_of_classes(tmp_path, capsys):
    from PIL import Image

    def folder(name, classes):
        for cls in classes:
            (tmp_path / name / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(tmp_path / name / cls / f"{i}.png")
        return str(tmp_path / name)

    run = str(tmp_path / "run")
    assert main(["train", "--data", folder("abc", "abc"), "--conditional", "--out", run, "--steps", "2", *TINY]) == 0
    capsys.readouterr()
    assert main(["train", "--data", folder("abd", "abd"), "--conditional", "--out", run, "--steps", "4", "--resume",
                 *TINY]) == 2
    one_line_error(capsys, "--resume", "classes [a, b, c]", "[a, b, d]")


@pytest.mark.parametrize("args, words", [
    (["--class", "10"], ["--class '10'", "0 .. 9"]),
    (["--class", "cat"], ["--class 'cat'", "no such class"]),
    (["--guidance", "-1"], ["--guidance -1.0", ">= 0"]),
    (["--guidance", "inf"], ["--guidance inf", "finite"]),
    (["--per-class", "0"], ["--per-class 0"]),
])
def test_bad_class_and_guidance_options(cond_run, tmp_path, capsys, args, words):
    assert main(["sample", str(cond_run), *args, "--out", str(tmp_path / "g.png"), "--no-progress"]) == 2
    one_line_error(capsys, *words)


@pytest.mark.parametrize("flag, value", [("--class", "3"), ("--per-class", "2"), ("--guidance", "1")])
def test_class_options_of_an_unconditional_run(tmp_path, capsys, flag, value):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), "--steps", "2", "--sample-every", "100", *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), flag, value, "--out", str(tmp_path / "g.png"), "--no-progress"]) == 2
    one_line_error(capsys, flag, "unconditional", "--conditional")
    for cmd in (["trajectory", str(run), "--n", "1"], ["eval", str(run), "--metrics", "fid", "--n", "2"]):
        if flag != "--per-class":
            assert main([*cmd, flag, value, "--no-progress"]) == 2
            one_line_error(capsys, flag, "unconditional")


def test_trajectory_and_interpolate_take_class_and_guidance(cond_run, tmp_path):
    assert main(["trajectory", str(cond_run), "--n", "2", "--columns", "3", "--class", "1,2", "--guidance", "1",
                 "--out", str(tmp_path / "t.png"), "--no-progress"]) == 0
    assert main(["interpolate", str(cond_run), "--data", "digits", "--a", "0", "--b", "1", "--t", "10",
                 "--lambdas", "3", "--class", "5", "--guidance", "0.5", "--out", str(tmp_path / "i.png"),
                 "--no-progress"]) == 0
    assert (tmp_path / "t.png").is_file() and (tmp_path / "i.png").is_file()
    # rate-distortion of a conditional run is its conditional bound, the same as eval's nll
    assert main(["rate-distortion", str(cond_run), "--n", "4", "--out", str(tmp_path / "rd.png"), "--no-progress"]) == 0
    assert main(["eval", str(cond_run), "--metrics", "nll", "--nll-n", "4", "--json", str(tmp_path / "e.json"),
                 "--no-progress"]) == 0
    rate = float((tmp_path / "rd.csv").read_text().strip().splitlines()[-1].split(",")[1])
    assert abs(rate - json.loads((tmp_path / "e.json").read_text())["nll_bpd"]) < 1e-3


TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed")
def test_torchrun_trains_a_conditional_model_as_one_process_does(tmp_path, labelled_npz):
    from safetensors.numpy import load_file

    common = ["--data", labelled_npz, "--conditional", "--steps", "4", "--checkpoint-every", "4",
              "--sample-every", "100", *TINY, "--set", 'train.precision="fp32"']  # bf16: each rank rounds its half
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "ddpmkit.cli", "train", "--out",
           str(tmp_path / "two"), *common]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DDPMKIT_FAULT")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**env, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert main(["train", "--out", str(tmp_path / "one"), *common]) == 0
    one = load_file(str(tmp_path / "one/checkpoints/step_000000004/model.safetensors"))
    two = load_file(str(tmp_path / "two/checkpoints/step_000000004/model.safetensors"))
    assert "class_emb.weight" in one
    for k in one:
        assert np.allclose(one[k], two[k], rtol=1e-4, atol=1e-6), k
    assert one["class_emb.weight"].shape[0] == 4  # 3 classes and the no-class row
