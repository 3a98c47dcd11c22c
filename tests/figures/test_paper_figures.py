"""The paper's figures: trajectory (Fig. 6), interpolation (Fig. 8), rate-distortion (Fig. 5).

The CLI end to end on a tiny trained run (PNG sizes, one-line errors), the functions' shapes, and the theory with
the analytic oracle: the rate never falls and the distortion never rises as t goes from T to 0, and at t = 0 the
rate is the NLL of `ddpm eval --metrics nll`.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ddpmkit
from ddpmkit import oracle
from ddpmkit.cli import main
from grids import grid_size  # tests/grids.py (tests/ is on sys.path by its conftest.py)
from ddpmkit.data import from_model_range, load_dataset, to_model_range
from ddpmkit.diffusion import Diffusion
from ddpmkit.figures import coding as rd
from ddpmkit.pipeline import Pipeline

T = 20
TINY = ["--set", "model.preset=\"tiny\"", "--set", f"diffusion.timesteps={T}", "--set", "sample.steps=10",
        "--set", "train.num_samples=4", "--batch-size", "16", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("figures") / "run"
    assert main(["train", "--out", str(root), "--steps", "2", "--checkpoint-every", "2", "--sample-every", "2",
                 *TINY]) == 0
    return root


def oracle_pipeline(points_uint8: np.ndarray, timesteps: int) -> Pipeline:
    """A Pipeline whose model is the exact denoiser of data uniform on `points_uint8` (N, H, W, C)."""
    d = Diffusion.from_name("linear", timesteps, beta_end=0.2)
    model = oracle.finite_set(d, to_model_range(torch.from_numpy(points_uint8)))
    size, channels = points_uint8.shape[1], points_uint8.shape[3]
    return Pipeline(model, d, None, size, channels, 0, None)


def one_line_error(capsys, *words) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


# --- trajectory [DDPM Fig. 6] ---------------------------------------------------------------------------------

@pytest.mark.parametrize("show, rows_per_sample", [("x0", 1), ("xt", 1), ("both", 2)])
def test_trajectory_cli_writes_a_grid_of_samples_by_timesteps(run, tmp_path, show, rows_per_sample):
    out = tmp_path / "traj.png"
    assert main(["trajectory", str(run), "--out", str(out), "--n", "3", "--columns", "5", "--show", show,
                 "--no-progress"]) == 0
    assert Image.open(out).size == grid_size(3 * rows_per_sample, 5)


def test_trajectory_columns_run_from_T_to_0_and_end_in_the_sample(run):
    pipe = ddpmkit.load(run)
    traj = ddpmkit.trajectory(pipe, n=3, columns=4, seed=1, batch_size=2)
    assert list(traj.t) == [20, 13, 7, 0]
    assert traj.x0_pred.shape == traj.xt.shape == (3, 4, 1, 8, 8)
    assert traj.x0_pred.dtype == np.float32 and np.abs(traj.x0_pred).max() <= 1.0
    assert np.array_equal(traj.x0_pred[:, -1], traj.xt[:, -1])  # at t = 0 both are the sample x_0
    samples = pipe.sample(3, sampler="ancestral", steps=T, seed=1, batch_size=2)  # Algorithm 2, same noise
    assert np.array_equal(from_model_range(torch.from_numpy(traj.x0_pred[:, -1])).numpy(), samples)


# --- interpolation [DDPM Sec. 4.3, Fig. 8] ----------------------------------------------------------------------

def test_interpolate_cli_by_index_and_by_file(run, tmp_path):
    out = tmp_path / "interp.png"
    assert main(["interpolate", str(run), "--data", "digits", "--a", "3", "--b", "17", "--lambdas", "4",
                 "--out", str(out), "--no-progress"]) == 0  # t = T / 2 by default
    assert Image.open(out).size == grid_size(1, 4 + 2)  # A, four λ, B
    digits = load_dataset("digits", split="test").images
    Image.fromarray(digits[3][..., 0]).save(tmp_path / "a.png")
    Image.fromarray(digits[17][..., 0]).save(tmp_path / "b.png")
    assert main(["interpolate", str(run), "--a", str(tmp_path / "a.png"), "--b", str(tmp_path / "b.png"),
                 "--t", str(T), "--lambdas", "3", "--out", str(out), "--no-progress"]) == 0
    assert Image.open(out).size == grid_size(1, 3 + 2)


def test_interpolate_returns_one_image_per_lambda(run):
    pipe = ddpmkit.load(run)
    digits = load_dataset("digits", split="test").images
    out = ddpmkit.interpolate(pipe, digits[0], digits[1], t=7, lambdas=5, seed=2)
    assert out.shape == (5, 1, 8, 8) and out.dtype == np.float32 and np.abs(out).max() <= 1.0
    again = ddpmkit.interpolate(pipe, digits[0], digits[1], t=7, lambdas=[0.0, 0.25, 0.5, 0.75, 1.0], seed=2)
    assert np.array_equal(out, again)  # seeded, and the same λ as a count or as values
    assert ddpmkit.interpolate(pipe, digits[0], digits[1], lambdas=2).shape == (2, 1, 8, 8)  # t = T // 2


def test_interpolation_ends_decode_to_the_two_images_for_small_t():
    # the exact denoiser of a few distant points: from a lightly noised x_t it recovers the image it came from
    points = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    pipe = oracle_pipeline(points, 50)
    out = ddpmkit.interpolate(pipe, points[1], points[4], t=3, lambdas=3, seed=0)
    decoded = from_model_range(torch.from_numpy(out)).numpy()
    assert np.array_equal(decoded[0], points[1]) and np.array_equal(decoded[-1], points[4])


# --- rate-distortion [DDPM Sec. 4.3, Algorithms 3-4, Fig. 5] ----------------------------------------------------

def test_rate_and_distortion_from_known_terms():
    curve = rd.rate_distortion_from_terms(np.array([0.5, 0.2, 0.1]), np.array([0.0, 0.01, 0.04]), prior_bpd=0.05)
    assert list(curve["t"]) == [3, 2, 1, 0]
    assert np.allclose(curve["rate_bpd"], [0.05, 0.15, 0.35, 0.85])  # L_T, + L_2, + L_1, + the decoder L_0
    assert np.allclose(curve["distortion_rmse"], [0.2 * 127.5, 0.1 * 127.5, 0.0, 0.0])


def test_rate_rises_and_distortion_falls_from_T_to_0_with_the_oracle():
    points = np.random.default_rng(1).integers(0, 256, (16, 4, 4, 1), dtype=np.uint8)
    pipe = oracle_pipeline(points, 40)
    images = np.repeat(points, 32, axis=0)  # each image coded 32 times, with its own draws of x_t
    curve = ddpmkit.rate_distortion(pipe, images, batch_size=512, seed=0)
    for key in ("t", "rate_bpd", "distortion_rmse"):
        assert curve[key].shape == (41,)
    assert list(curve["t"]) == list(range(40, -1, -1))
    assert np.all(np.diff(curve["rate_bpd"]) >= 0)  # a running sum of KL terms, each >= 0
    dist = curve["distortion_rmse"]
    assert np.all(np.diff(dist) <= 0.02 * dist.max())  # up to Monte Carlo noise (seen: <= 1.1% at seeds 0-2)
    assert dist[0] > 30 and dist[-1] == 0.0  # from about the data's spread to x_0 itself
    assert curve["rate_bpd"][-1] == pytest.approx(curve["nll_bpd"], rel=1e-9)


def test_rate_distortion_cli_png_csv_and_the_nll_of_ddpm_eval(run, tmp_path):
    out = tmp_path / "rd.png"
    assert main(["rate-distortion", str(run), "--n", "6", "--batch-size", "4", "--seed", "3", "--out", str(out),
                 "--no-progress"]) == 0
    assert Image.open(out).size == (int(rd.FIGSIZE[0] * rd.DPI), int(rd.FIGSIZE[1] * rd.DPI))
    assert (tmp_path / "rd.csv").read_text().splitlines()[0] == "t,rate_bpd,distortion_rmse"
    curve = rd.read_csv(tmp_path / "rd.csv")
    assert list(curve["t"]) == list(range(T, -1, -1))
    assert np.all(np.diff(curve["rate_bpd"]) >= 0)
    assert main(["eval", str(run), "--metrics", "nll", "--nll-n", "6", "--batch-size", "4", "--seed", "3",
                 "--json", str(tmp_path / "eval.json"), "--no-progress"]) == 0
    nll = json.loads((tmp_path / "eval.json").read_text())["nll_bpd"]
    assert curve["rate_bpd"][-1] == pytest.approx(nll, rel=1e-8)
    # the same curve from the per-t terms that ddpm eval saved
    assert main(["rate-distortion", str(run), "--terms", str(tmp_path / "nll_terms.npz"), "--out",
                 str(tmp_path / "again.png"), "--csv", str(tmp_path / "again.csv"), "--no-progress"]) == 0
    again = rd.read_csv(tmp_path / "again.csv")
    assert np.allclose(again["rate_bpd"], curve["rate_bpd"]) and np.allclose(again["distortion_rmse"],
                                                                            curve["distortion_rmse"])


# --- one-line errors, exit code 2 --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    Image.new("L", (8, 8)).save(root / "ok.png")
    Image.new("RGB", (8, 8)).save(root / "rgb.png")
    Image.new("L", (9, 9)).save(root / "big.png")
    return root


@pytest.mark.parametrize("args, words", [
    (["--a", "{img}/missing.png", "--b", "{img}/ok.png"], ["--a", "missing.png", "no such image file"]),
    (["--a", "{img}/ok.png", "--b", "{img}/rgb.png"], ["--b", "rgb.png", "8x8x3", "8x8x1"]),
    (["--a", "{img}/big.png", "--b", "{img}/ok.png"], ["--a", "big.png", "9x9x1", "8x8x1"]),
    (["--data", "digits", "--a", "3", "--b", "297"], ["--b 297", "out of range", "0..296"]),
    (["--data", "digits", "--a", "-1", "--b", "2"], ["--a -1", "out of range"]),
    (["--data", "digits", "--a", "x.png", "--b", "2"], ["--a", "index"]),
    (["--a", "{img}/ok.png", "--b", "{img}/ok.png", "--t", "0"], ["--t 0", "between 1 and T = 20"]),
    (["--a", "{img}/ok.png", "--b", "{img}/ok.png", "--t", "21"], ["--t 21", "between 1 and T = 20"]),
    (["--a", "{img}/ok.png", "--b", "{img}/ok.png", "--t", "5", "--lambdas", "1"], ["--lambdas 1"]),
])
def test_interpolate_bad_inputs_get_one_line(run, images, tmp_path, capsys, args, words):
    args = [a.replace("{img}", str(images)) for a in args]
    argv = ["interpolate", str(run), *args, "--out", str(tmp_path / "i.png"), "--no-progress"]
    if "--t" not in args:
        argv += ["--t", "5"]
    assert main(argv) == 2
    one_line_error(capsys, "ddpm interpolate: error:", *words)
    assert not (tmp_path / "i.png").exists()


def test_trajectory_and_rate_distortion_bad_inputs_get_one_line(run, tmp_path, capsys):
    assert main(["trajectory", str(run), "--columns", "22", "--out", str(tmp_path / "t.png")]) == 2
    one_line_error(capsys, "--columns 22", "T + 1 = 21")
    np.savez(tmp_path / "short.npz", terms_bpd=np.zeros(5), x0_mse=np.zeros(5), prior_bpd=0.0)
    assert main(["rate-distortion", str(run), "--terms", str(tmp_path / "short.npz"), "--out",
                 str(tmp_path / "r.png")]) == 2
    one_line_error(capsys, "short.npz", "T = 20")
    (tmp_path / "bad.npz").write_text("t,rate\n")
    assert main(["rate-distortion", str(run), "--terms", str(tmp_path / "bad.npz"), "--out",
                 str(tmp_path / "r.png")]) == 2
    one_line_error(capsys, "bad.npz", "ddpm eval --metrics nll")
    assert main(["rate-distortion", str(run), "--data", "digits", "--split", "bogus", "--out",
                 str(tmp_path / "r.png")]) == 2
    one_line_error(capsys, "split")
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "r.png").exists()
