"""`ddpm import-diffusers` / `export-diffusers` from the command line: an imported model samples, is evaluated and
draws the paper's three figures; every refusal is one line on stderr naming the file, exit code 2, and nothing is
written to --out."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import safetensors.torch as st
import torch
from dm_folders import TINY_SCHEDULER, TINY_UNET, edit_json, save_diffusers

from ddpmkit.cli import main

pytest.importorskip("diffusers")
COMMON = ["--device", "cpu", "--no-progress"]


def test_an_imported_model_samples_evaluates_and_draws_the_three_figures(tmp_path, tiny_flat, capsys):
    run = tmp_path / "run"
    assert main(["import-diffusers", str(tiny_flat), "--out", str(run), "--data", "digits"]) == 0
    assert "as model and EMA weights" in capsys.readouterr().out
    assert (run / "config.toml").is_file() and json.loads((run / "imported.json").read_text())["layout"] == "flat"
    assert main(["sample", str(run), "--n", "4", "--npz", str(tmp_path / "s.npz"), *COMMON]) == 0
    assert main(["eval", str(run), "--metrics", "nll", "--nll-n", "4", *COMMON]) == 0
    result = json.loads((run / "eval.json").read_text())
    assert result["nll_n"] == 4 and result["nll_bpd"] > 0 and result["step"] == 0
    assert main(["trajectory", str(run), "--n", "2", "--columns", "4", *COMMON]) == 0
    assert main(["interpolate", str(run), "--data", "digits", "--a", "0", "--b", "1", "--lambdas", "3", *COMMON]) == 0
    assert main(["rate-distortion", str(run), "--n", "4", *COMMON]) == 0
    assert all((run / f).stat().st_size > 0 for f in ("sample_grid.png", "trajectory.png", "interpolation.png",
                                                      "rate_distortion.png", "rate_distortion.csv"))
    assert main(["export-diffusers", str(run), "--out", str(tmp_path / "back")]) == 0
    assert (tmp_path / "back" / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def _refused(capsys, argv: list[str], *words: str) -> str:
    """Run the CLI; it must exit 2 with one stderr line holding every word."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    return err


UNET_REFUSALS = {  # config.json key -> (a value ddpmkit cannot express, words the line must hold)
    "flip_sin_to_cos": (True, ["flip_sin_to_cos = true", "sin before cos"]),
    "freq_shift": (0, ["freq_shift = 0", "supported: 1"]),
    "norm_eps": (1e-5, ["norm_eps = 1e-05", "1e-06"]),
    "attention_head_dim": (8, ["attention_head_dim = 8", "one attention head"]),
    "downsample_padding": (1, ["downsample_padding = 1", "pad right and bottom"]),
    "resnet_time_scale_shift": ("scale_shift", ["resnet_time_scale_shift", "as a bias"]),
    "center_input_sample": (True, ["center_input_sample = true"]),
    "time_embedding_type": ("fourier", ["time_embedding_type", "positional"]),
    "act_fn": ("gelu", ["act_fn", "silu"]),
    "num_class_embeds": (10, ["num_class_embeds = 10"]),
    "add_attention": (False, ["add_attention = false"]),
    "mid_block_type": (None, ["mid_block_type = null"]),
    "up_block_types": (["UpBlock2D", "AttnUpBlock2D"], ["up_block_types[0]", "mirrors the down path"]),
    "down_block_types": (["DownBlock2D", "CrossAttnDownBlock2D"], ["down_block_types[1]"]),
    "block_out_channels": ([16, 24], ["block_out_channels = [16, 24]", "multiples"]),
    "out_channels": (2, ["out_channels = 2", "learned variances are not mapped"]),
    "in_channels": (4, ["in_channels = 4", "1 (grey) or 3 (RGB)"]),
    "norm_num_groups": (16, ["norm_num_groups = 16", "groups of 2 or more"]),
    "sample_size": ([8, 16], ["sample_size = [8, 16]", "square"]),
    "_class_name": ("UNet2DConditionModel", ["_class_name", "UNet2DModel"]),
    "cross_attention_dim": (768, ["unknown key 'cross_attention_dim'"]),
}
SCHEDULER_REFUSALS = {
    "beta_schedule": ("scaled_linear", ["beta_schedule", "squaredcos_cap_v2"]),
    "variance_type": ("learned_range", ["variance_type", "clamps the learned v"]),
    "variance_type learned": ("learned", ["variance_type", "is log sigma^2"]),  # the key is the first word
    "prediction_type": ("flow", ["prediction_type", "v_prediction"]),
    "clip_sample": (False, ["clip_sample = false", "clip x0"]),
    "clip_sample_range": (2.0, ["clip_sample_range = 2.0"]),
    "thresholding": (True, ["thresholding = true"]),
    "rescale_betas_zero_snr": (True, ["rescale_betas_zero_snr = true"]),
    "trained_betas": ([0.01] * 10 + [0.02] * 10, ["trained_betas", "float64"]),
    "_class_name": ("DDIMScheduler", ["_class_name", "DDPMScheduler"]),
}


@pytest.mark.parametrize("key", sorted(UNET_REFUSALS))
def test_a_unet_config_ddpmkit_cannot_express_is_refused(tmp_path, tiny_flat, capsys, key):
    value, words = UNET_REFUSALS[key]
    edit_json(tiny_flat / "config.json", **{key: value})
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")], "config.json", *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", sorted(SCHEDULER_REFUSALS))
def test_a_scheduler_config_without_counterpart_is_refused(tmp_path, tiny_flat, capsys, key):
    value, words = SCHEDULER_REFUSALS[key]
    edit_json(tiny_flat / "scheduler_config.json", **{key.split()[0]: value})
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")], "scheduler_config.json",
             *words)
    assert not (tmp_path / "run").exists()


def test_a_missing_key_means_diffusers_default_and_is_refused_when_that_default_differs(tmp_path, tiny_flat, capsys):
    edit_json(tiny_flat / "config.json", flip_sin_to_cos=...)  # diffusers' default is true
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")], "flip_sin_to_cos = true")


class _Marker:
    """Unpickling this writes a file: proof that a pickle was opened."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "unpickled"))


def test_a_pickled_bin_is_refused_unread_with_the_conversion_command(tmp_path, tiny_flat, capsys):
    (tiny_flat / "diffusion_pytorch_model.safetensors").unlink()
    marker = tmp_path / "opened"
    (tiny_flat / "diffusion_pytorch_model.bin").write_bytes(pickle.dumps(_Marker(marker)))
    err = _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")],
                   "diffusion_pytorch_model.bin", "never opens", "weights_only=True", "st.save_file")
    assert "diffusion_pytorch_model.safetensors" in err and not marker.exists() and not (tmp_path / "run").exists()


def _remove(tiny_flat, name):
    (tiny_flat / name).unlink()


def _bad_json(tiny_flat, name):
    (tiny_flat / name).write_text('{"in_channels": 1,')


def _tensors(tiny_flat, change):
    path = tiny_flat / "diffusion_pytorch_model.safetensors"
    state = st.load_file(path)
    change(state)
    st.save_file(state, path)


MALFORMED = {  # what is wrong -> (how to break the folder, words of the one line)
    "no config.json": (lambda f: _remove(f, "config.json"), ["neither model_index.json", "config.json"]),
    "no scheduler_config.json": (lambda f: _remove(f, "scheduler_config.json"), ["scheduler_config.json: missing"]),
    "no weights": (lambda f: _remove(f, "diffusion_pytorch_model.safetensors"), ["safetensors: missing"]),
    "bad JSON": (lambda f: _bad_json(f, "config.json"), ["config.json: not valid JSON"]),
    "scheduler not an object": (lambda f: (f / "scheduler_config.json").write_text("[1, 2]"),
                                ["scheduler_config.json: not a JSON object"]),
    "corrupt weights": (lambda f: (f / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10" * 64),
                        ["safetensors: not a safetensors file"]),
    "extra tensor": (lambda f: _tensors(f, lambda s: s.__setitem__("class_embedding.weight", torch.zeros(3, 64))),
                     ["1 tensors that config.json's network has no place for (class_embedding.weight)"]),
    "missing tensor": (lambda f: _tensors(f, lambda s: s.pop("conv_out.bias")),
                       ["1 tensors that config.json's network needs are missing (conv_out.bias)"]),
    "wrong shape": (lambda f: _tensors(f, lambda s: s.__setitem__("conv_in.weight", torch.zeros(16, 1, 5, 5))),
                    ["tensor conv_in.weight has shape [16, 1, 5, 5]", "needs [16, 1, 3, 3]"]),
    "integer tensor": (lambda f: _tensors(f, lambda s: s.__setitem__("conv_in.bias", torch.zeros(16, dtype=torch.int64))),
                       ["conv_in.bias is torch.int64, not floating point"]),
    "old and new names": (lambda f: _tensors(f, lambda s: s.__setitem__(
        "down_blocks.1.attentions.0.query.weight", s["down_blocks.1.attentions.0.to_q.weight"].clone())),
                          ["down_blocks.1.attentions.0.to_q.weight is there under its old and its new name"]),
}


@pytest.mark.parametrize("what", sorted(MALFORMED))
def test_malformed_input_is_one_line_naming_the_file(tmp_path, tiny_flat, capsys, what):
    breaking, words = MALFORMED[what]
    breaking(tiny_flat)
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")], str(tiny_flat), *words)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".tmp-*"))


def test_a_pipeline_folder_of_another_pipeline_is_refused(tmp_path, capsys):
    save_diffusers(tmp_path / "dm", TINY_UNET, TINY_SCHEDULER, "pipeline")
    edit_json(tmp_path / "dm" / "model_index.json", _class_name="DDIMPipeline")
    _refused(capsys, ["import-diffusers", str(tmp_path / "dm"), "--out", str(tmp_path / "run")],
             "model_index.json", "_class_name", "DDPMPipeline")


def test_an_existing_out_is_refused_and_a_failed_write_leaves_nothing(tmp_path, tiny_flat, capsys, monkeypatch):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "taken")], "not an empty directory")
    assert (tmp_path / "taken" / "keep.txt").read_text() == "mine"
    from ddpmkit.store import rundir

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rundir, "save_checkpoint", disk_full)
    _refused(capsys, ["import-diffusers", str(tiny_flat), "--out", str(tmp_path / "run")], "No space left")
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".tmp-*"))


def test_export_refuses_what_diffusers_cannot_express(tmp_path, capsys):
    from ddpmkit import UNet
    from ddpmkit.config import RunConfig
    from ddpmkit.store import write_run

    for name, values, net_options, words in [
        ("learned", {"diffusion.variance": "learned_range", "train.loss": "hybrid", "model.num_groups": 8},
         {"out_channels": 2, "num_groups": 8}, ["diffusion.variance = 'learned_range'", "does not clamp v"]),
        ("logvar", {"diffusion.variance": "learned", "train.loss": "kl", "model.num_groups": 8},
         {"out_channels": 2, "num_groups": 8}, ["diffusion.variance = 'learned'", "log sigma^2"]),
        ("xprev", {"diffusion.parameterization": "xprev", "model.num_groups": 8}, {"num_groups": 8},
         ["diffusion.parameterization = 'xprev'", "no prediction_type"]),
        ("narrow", {}, {}, ["GroupNorm over 16 channels has 8 groups, not model.num_groups = 32"]),
    ]:
        config = RunConfig().with_values({"model.preset": "tiny", "diffusion.timesteps": 10, **values})
        weights = UNet.from_preset("tiny", **net_options).state_dict()
        write_run(tmp_path / name, config, {"image_size": 8, "channels": 1}, {"model": weights, "ema": weights})
        _refused(capsys, ["export-diffusers", str(tmp_path / name), "--out", str(tmp_path / f"{name}-dm")],
                 "config.json", *words)
        assert not (tmp_path / f"{name}-dm").exists()


def test_resuming_training_on_an_imported_run_is_one_line(tmp_path, tiny_flat, capsys):
    run = tmp_path / "run"
    assert main(["import-diffusers", str(tiny_flat), "--out", str(run), "--data", "digits"]) == 0
    _refused(capsys, ["train", "--out", str(run), "--resume", "--steps", "1", "--no-progress", "--device", "cpu"],
             "without optimizer state")
