"""`ddpm reconstruct`, `ddpm inpaint`, `ddpm encode` and `ddpm sample --x-T` end to end on a tiny trained run:
PNG and npz shapes, kept pixels exact, and one line with exit code 2 for each kind of bad input."""


import numpy as np
import pytest
from PIL import Image

from ddpmkit.cli import main
from grids import grid_size  # tests/grids.py (tests/ is on sys.path by its conftest.py)

T = 20
TINY = ["--set", "model.preset=\"tiny\"", "--set", f"diffusion.timesteps={T}", "--set", "sample.steps=10",
        "--set", "train.num_samples=4", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("edit") / "run"
    assert main(["train", "--out", str(root), "--steps", "2", "--checkpoint-every", "2", "--sample-every", "0",
                 *TINY]) == 0
    return root


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_reconstruct_draws_fig7_rows_for_a_range_of_images(run, tmp_path):
    out, npz = tmp_path / "fig7.png", tmp_path / "rec.npz"
    assert main(["reconstruct", str(run), "--image", "0:2", "--data", "digits", "--t", "5,10,20", "--n", "3",
                 "--out", str(out), "--npz", str(npz), "--no-progress"]) == 0
    assert Image.open(out).size == grid_size(2 * 3, 3 + 2)  # one row per image and t: image, x_t, 3 samples
    with np.load(npz) as f:
        assert f["arr_0"].shape == (2 * 3 * 3, 8, 8, 1) and f["arr_0"].dtype == np.uint8
        assert f["t"].tolist() == [5] * 3 + [10] * 3 + [20] * 3 + [5] * 3 + [10] * 3 + [20] * 3


def test_reconstruct_takes_a_users_image_of_any_size(run, tmp_path):
    rough = tmp_path / "rough.png"
    pixels = np.broadcast_to(np.linspace(0, 255, 30).astype(np.uint8)[None, :, None], (20, 30, 3))
    Image.fromarray(np.ascontiguousarray(pixels)).save(rough)  # 30 x 20 RGB: fitted to 8x8 grey as training data
    out = tmp_path / "sdedit.png"
    assert main(["reconstruct", str(run), "--image", str(rough), "--t", "10", "--n", "2", "--sampler", "ddim",
                 "--steps", "5", "--out", str(out), "--no-progress"]) == 0
    assert Image.open(out).size == grid_size(1, 4)


def test_inpaint_keeps_the_white_pixels_exactly(run, tmp_path):
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, :5] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    npz = tmp_path / "inp.npz"
    assert main(["inpaint", str(run), "--image", "3,4", "--data", "digits", "--mask", str(tmp_path / "mask.png"),
                 "--n", "2", "--resample", "2", "--jump", "3", "--out", str(tmp_path / "inp.png"), "--npz", str(npz),
                 "--no-progress"]) == 0
    from ddpmkit.data import load_dataset

    test = load_dataset("digits", split="test").images[[3, 4]]
    with np.load(npz) as f:
        filled = f["arr_0"].reshape(2, 2, 8, 8, 1)
    assert (filled[:, :, :, :5] == test[:, None, :, :5]).all()
    assert Image.open(tmp_path / "inp.png").size == grid_size(2, 3)
    assert main(["inpaint", str(run), "--image", "0", "--data", "digits", "--mask", "center", "--n", "1",
                 "--out", str(tmp_path / "c.png"), "--no-progress"]) == 0


def test_encode_then_sample_x_T_decodes_the_latents(run, tmp_path, capsys):
    npz = tmp_path / "latents.npz"
    assert main(["encode", str(run), "--image", "0:3", "--data", "digits", "--steps", "8", "--npz", str(npz),
                 "--no-progress"]) == 0
    assert "round trip RMSE" in capsys.readouterr().out
    with np.load(npz) as f:
        assert f["x_T"].shape == (3, 1, 8, 8) and f["x_T"].dtype == np.float32 and f["arr_0"].dtype == np.uint8
        assert str(f["sampler"]) == "dpm++2m" and int(f["steps"]) == 8
    out = tmp_path / "decoded.npz"
    assert main(["sample", str(run), "--x-T", str(npz), "--out", str(tmp_path / "d.png"), "--npz", str(out),
                 "--no-progress"]) == 0
    with np.load(out) as f:
        assert f["arr_0"].shape == (3, 8, 8, 1)


@pytest.mark.parametrize("argv, words", [
    (["inpaint", "--image", "0", "--data", "digits", "--mask", "BIG"], ["--mask", "8x8"]),
    (["inpaint", "--image", "0", "--data", "digits", "--mask", "WHITE"], ["--mask", "no pixel"]),
    (["inpaint", "--image", "0", "--data", "digits", "--mask", "diagonal"], ["--mask", "center"]),
    (["reconstruct", "--image", "0", "--data", "digits", "--t", "0,5"], ["--t 0", "T = 20"]),
    (["reconstruct", "--image", "0", "--data", "digits", "--t", "21"], ["--t 21"]),
    (["reconstruct", "--image", "BROKEN"], ["broken.png", "not an image"]),
    (["reconstruct", "--image", "0:500", "--data", "digits"], ["--image", "out of range"]),
    (["reconstruct", "--image", "3"], ["--image", "--data"]),
    (["encode", "--image", "0", "--data", "digits", "--sampler", "dpm++2m", "--steps", "1"], ["--steps 1"]),
    (["sample", "--x-T", "BROKEN"], ["--x-T"]),
])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, argv, words):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "white.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    names = {"BIG": tmp_path / "big.png", "WHITE": tmp_path / "white.png", "BROKEN": tmp_path / "broken.png"}
    argv = [str(names.get(a, a)) for a in argv]
    extra = ["--npz", str(tmp_path / "x.npz")] if argv[0] == "encode" else []
    assert main([argv[0], str(run), *argv[1:], *extra, "--no-progress"]) == 2
    one_line_error(capsys, *words)


def test_conditional_run_takes_class_and_guidance_in_every_command(tmp_path, capsys):
    cond = tmp_path / "cond"
    assert main(["train", "--out", str(cond), "--steps", "2", "--checkpoint-every", "2", "--sample-every", "0",
                 "--conditional", *TINY]) == 0
    common = ["--image", "0", "--data", "digits", "--class", "3", "--guidance", "1", "--no-progress"]
    assert main(["reconstruct", str(cond), "--t", "5,20", "--n", "2", "--out", str(tmp_path / "r.png"), *common]) == 0
    assert main(["inpaint", str(cond), "--mask", "top", "--n", "2", "--out", str(tmp_path / "i.png"), *common]) == 0
    npz = tmp_path / "z.npz"
    assert main(["encode", str(cond), "--steps", "5", "--npz", str(npz), *common]) == 0
    assert main(["sample", str(cond), "--x-T", str(npz), "--class", "3", "--guidance", "1",
                 "--out", str(tmp_path / "s.png"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["reconstruct", str(cond), "--t", "5", "--n", "1", *common[:4], "--class", "3,4"]) == 2
    one_line_error(capsys, "--class 3,4", "one class")
