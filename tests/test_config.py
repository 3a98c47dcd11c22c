"""Configs: presets load and validate, cifar10 is the paper's setup (cifar10_improved IDDPM's), TOML round trip,
refusals."""

import tomllib

import pytest

from ddpmkit.cli import main
from ddpmkit.config import RunConfig, config_differences, load_config, parse_value, preset_names, to_toml
from ddpmkit.errors import ConfigError
from ddpmkit.models import UNet


def test_presets_exist_and_load():
    assert {"digits", "fashion_mnist", "cifar10"} <= set(preset_names())
    for name in preset_names():
        config = load_config(name)
        assert RunConfig.from_dict(tomllib.loads(to_toml(config))) == config  # TOML round trip


def test_cifar10_preset_is_the_papers_setup():
    c = load_config("cifar10")
    assert (c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.beta_start, c.diffusion.beta_end) == (
        "linear", 1000, 1e-4, 0.02)
    assert (c.diffusion.parameterization, c.diffusion.variance, c.train.loss) == ("eps", "fixed_large", "simple")
    t = c.train
    assert (t.lr, t.warmup, t.grad_clip, t.batch_size, t.ema_decay, t.steps) == (2e-4, 5000, 1.0, 128, 0.9999, 800000)
    assert c.data.hflip and c.model.preset == "cifar10"
    net = UNet.from_preset(c.model.preset, **c.model.overrides())
    assert net.config["dropout"] == 0.1 and tuple(net.config["attn_resolutions"]) == (16,)


def test_cifar10_improved_preset_is_iddpms_recipe_and_builds():
    import torch

    from ddpmkit.pipeline import build_diffusion, build_model

    c = load_config("cifar10_improved")
    assert (c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.variance) == ("cosine", 4000, "learned_range")
    t = c.train
    assert (t.loss, t.hybrid_lambda, t.timestep_sampler) == ("hybrid", 0.001, "uniform")
    assert (t.lr, t.batch_size, t.ema_decay, t.warmup, t.grad_clip) == (1e-4, 128, 0.9999, 0, 0.0)
    with torch.device("meta"):  # 49M parameters: shapes only, nothing allocated
        net = build_model(c, 32, 3)
    assert net.config["out_channels"] == 6 and net.config["num_res_blocks"] == 3 and net.config["dropout"] == 0.3
    assert tuple(net.config["ch_mult"]) == (1, 2, 2, 2) and tuple(net.config["attn_resolutions"]) == (16, 8)
    assert sum(p.numel() for p in net.parameters()) == 49_066_246
    d = build_diffusion(c)
    assert d.num_timesteps == 4000 and d.variance == "learned_range"


def test_a_checkpoint_config_without_a_newer_key_resumes_as_its_default():
    old = load_config("digits").to_dict()
    del old["train"]["timestep_sampler"]  # written by a ddpmkit from before the key existed
    assert config_differences(old, load_config("digits").to_dict()) == []
    changed = load_config("digits").replace("train.timestep_sampler", "uniform").to_dict()
    assert config_differences(old, changed) == ["train.timestep_sampler: 'auto' -> 'uniform'"]


def test_default_is_digits():
    assert load_config(None) == load_config("digits")
    assert load_config(None).data.spec == "digits" and not load_config(None).data.hflip


@pytest.mark.parametrize("key, value, words", [
    ("train.lr", -1.0, "train.lr"), ("train.loss", "l1", "hybrid"), ("diffusion.schedule", "sqrt", "cosine"),
    ("data.channels", 2, "data.channels"), ("model.dropout", 1.5, "model.dropout"), ("nope.x", 1, "known keys"),
    ("train.steps", 2.5, "integer"), ("sample.sampler", "euler", "ddim"),
    ("train.timestep_sampler", "stratified", "importance"), ("train.hybrid_lambda", 0, "train.hybrid_lambda"),
])
def test_bad_values_are_refused_with_what_is_allowed(key, value, words):
    with pytest.raises(ConfigError, match=words):
        load_config("digits").replace(key, value)


def test_unknown_sections_and_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown section"):
        RunConfig.from_dict({"optimizer": {}})
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr=1")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(bad)
    with pytest.raises(ConfigError, match="presets"):
        load_config("cifar11")


def test_sample_steps_cannot_exceed_T():
    with pytest.raises(ConfigError, match="sample.steps = 20 is more than diffusion.timesteps = 10"):
        load_config("digits").replace("diffusion.timesteps", 10)


def test_parse_value_and_differences():
    assert parse_value("3") == 3 and parse_value("true") is True and parse_value("[1, 2]") == [1, 2]
    assert parse_value("hello") == "hello" and parse_value('"x"') == "x"
    a, b = load_config("digits").to_dict(), load_config("digits").replace("train.steps", 9).to_dict()
    assert config_differences(a, b) == []  # more steps is a resumable change
    b = load_config("digits").replace("model.ch", 8).to_dict()
    assert config_differences(a, b) == ["model.ch: None -> 8"]


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "train" in out and "sample" in out


@pytest.mark.parametrize("name", ["celebahq256", "lsun256"])
def test_256_presets_are_the_papers_setup_and_build_the_114m_net(name):
    import torch

    from ddpmkit.pipeline import build_model

    c = load_config(name)
    assert (c.data.image_size, c.data.channels, c.model.preset) == (256, 3, name)
    assert (c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.beta_start, c.diffusion.beta_end) == (
        "linear", 1000, 1e-4, 0.02)
    assert (c.diffusion.parameterization, c.diffusion.variance, c.train.loss) == ("eps", "fixed_small", "simple")
    t = c.train
    assert (t.lr, t.warmup, t.grad_clip, t.batch_size, t.ema_decay) == (2e-5, 5000, 1.0, 64, 0.9999)
    with torch.device("meta"):
        net = build_model(c, 256, 3)
    assert sum(p.numel() for p in net.parameters()) == 113_673_219
