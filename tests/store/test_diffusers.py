"""Import from and export to diffusers: the same function on both sides (network outputs within 1e-5 in float32,
one reverse step of DDPMScheduler against ddpmkit's p_mean_variance), betas equal in float64, and round trips
that give back the weights bit for bit. diffusers is a test dependency; ddpmkit's importer never imports it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch as st
import torch

import ddpmkit
from ddpmkit import UNet, schedules
from ddpmkit.config import RunConfig
from ddpmkit.store import export_diffusers, import_diffusers, write_run

from dm_folders import CIFAR10_SCHEDULER, CIFAR10_UNET, SHRUNK256_UNET, TINY_SCHEDULER, TINY_UNET, save_diffusers

diffusers = pytest.importorskip("diffusers")
TOL = 1e-5


def _outputs(net, x, t):
    with torch.no_grad():
        out = net(x, t)
    return out.sample if hasattr(out, "sample") else out


def test_the_papers_cifar10_config_in_both_layouts_gives_diffusers_outputs(tmp_path):
    """google/ddpm-cifar10-32's exact config (35.7M parameters), random weights: flat and pipeline layouts."""
    theirs = save_diffusers(tmp_path / "flat", CIFAR10_UNET, CIFAR10_SCHEDULER, "flat")
    save_diffusers(tmp_path / "pipe", CIFAR10_UNET, CIFAR10_SCHEDULER, "pipeline")
    runs = [import_diffusers(tmp_path / layout, tmp_path / f"run-{layout}") for layout in ("flat", "pipe")]
    assert [r["layout"] for r in runs] == ["flat", "pipeline"] and runs[0]["parameters"] == 35_746_307
    ours = [ddpmkit.load(tmp_path / f"run-{layout}", device="cpu") for layout in ("flat", "pipe")]
    a, b = (p.model.state_dict() for p in ours)
    assert all(torch.equal(a[k], b[k]) for k in a)  # both layouts give the same weights
    c = ours[0].config
    assert c.model.preset == "cifar10" and tuple(c.model.ch_mult) == (1, 2, 2, 2) and c.model.attn_resolutions == [16]
    assert (c.diffusion.schedule, c.diffusion.timesteps, c.diffusion.variance) == ("linear", 1000, "fixed_large")
    torch.manual_seed(1)
    x, t = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 500, 999])  # several t in one batch
    expected = _outputs(theirs, x, t)
    got = _outputs(ours[0].model, x, t)
    assert expected.abs().mean() > 0.1 and (got - expected).abs().max() < TOL


def _diffusers_step(scheduler, model_output, t, xt, seed):
    """One reverse step of diffusers' DDPMScheduler with all T inference steps, in float64, and the noise it drew.

    float64 on both sides: diffusers' own float32 arithmetic (1 - alpha_bar near t = 0) is only good to about 1e-4,
    which would hide the mapping behind rounding. Its alpha_bar is recomputed in float64 from its own betas.
    """
    scheduler.set_timesteps(scheduler.config.num_train_timesteps)
    scheduler.alphas_cumprod = torch.cumprod(1.0 - scheduler.betas.double(), dim=0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    prev = scheduler.step(model_output.double(), t, xt.double(), generator=torch.Generator().manual_seed(seed))
    return prev.prev_sample, torch.randn(xt.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _ddpmkit_step(pipe, model_output, t, xt, noise):
    """x_{t-1} = mu + sigma z [DDPM Algorithm 2], z = 0 at t = 0, from ddpmkit's p_mean_variance."""
    tt = torch.full((xt.shape[0],), t, dtype=torch.int64)
    p = pipe.diffusion.p_mean_variance(pipe.model, xt.double(), tt, clip_denoised=True,
                                       model_output=model_output.double())
    return p["mean"] + (t > 0) * torch.exp(0.5 * p["log_variance"]) * noise


def _check_same_process(pipe, scheduler, net, size, channels):
    """The network outputs and one reverse step at several t agree with diffusers within TOL."""
    torch.manual_seed(2)
    T = pipe.diffusion.num_timesteps
    for t in (T - 1, T // 2, 1, 0):
        xt = torch.randn(2, channels, size, size)
        out = _outputs(net, xt, torch.tensor([t, t]))
        assert (pipe.model(xt, torch.tensor([t, t])) - out).abs().max() < TOL
        theirs, noise = _diffusers_step(scheduler, out, t, xt, seed=t)
        assert (_ddpmkit_step(pipe, out, t, xt, noise) - theirs).abs().max() < TOL, t


@pytest.mark.parametrize("prediction, variance", [("epsilon", "fixed_small"), ("sample", "fixed_large"),
                                                  ("v_prediction", "fixed_small"), ("epsilon", "fixed_small_log")])
def test_a_shrunken_256_layout_imports_with_every_prediction_type(tmp_path, prediction, variance):
    from diffusers import DDPMScheduler

    sched = {**CIFAR10_SCHEDULER, "num_train_timesteps": 50, "prediction_type": prediction, "variance_type": variance}
    net = save_diffusers(tmp_path / "dm", SHRUNK256_UNET, sched, "pipeline")
    import_diffusers(tmp_path / "dm", tmp_path / "run")
    pipe = ddpmkit.load(tmp_path / "run", device="cpu")
    assert pipe.config.diffusion.parameterization == {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}[prediction]
    assert [len(level.attn) for level in pipe.model.down] == [0, 0, 0, 0, 2, 0]  # the 256 layout's 16x16 level
    _check_same_process(pipe, DDPMScheduler.from_pretrained(tmp_path / "dm", subfolder="scheduler"), net, 32, 3)


def _random_run(path, values: dict):
    """A ddpmkit run of the tiny preset with random weights (the fresh init has zero output layers)."""
    config = RunConfig().with_values({"model.preset": "tiny", "model.num_groups": 8, "diffusion.timesteps": 30, **values})
    torch.manual_seed(3)
    net = UNet.from_preset("tiny", num_groups=8)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    ema = {k: v + 0.01 for k, v in net.state_dict().items()}
    write_run(path, config, {"image_size": 8, "channels": 1}, {"model": net.state_dict(), "ema": ema})
    return config, net.state_dict(), ema


@pytest.mark.parametrize("values", [{}, {"diffusion.schedule": "cosine", "diffusion.parameterization": "v"},
                                    {"diffusion.variance": "fixed_small", "diffusion.parameterization": "x0",
                                     "diffusion.beta_end": 0.05}])
def test_an_exported_run_loads_in_diffusers_with_the_same_outputs_and_betas(tmp_path, values):
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    config, _, ema = _random_run(tmp_path / "run", values)
    export_diffusers(tmp_path / "run", tmp_path / "dm")
    pipeline = DDPMPipeline.from_pretrained(tmp_path / "dm")
    unet = UNet2DModel.from_pretrained(tmp_path / "dm", subfolder="unet").eval()
    scheduler = DDPMScheduler.from_pretrained(tmp_path / "dm", subfolder="scheduler")
    d = config.diffusion
    kwargs = {"beta_start": d.beta_start, "beta_end": d.beta_end} if d.schedule == "linear" else {}
    beta = schedules.get(d.schedule, d.timesteps, **kwargs)
    assert np.array_equal(np.asarray(scheduler.config.trained_betas, dtype=np.float64), beta)  # float64, bit for bit
    assert torch.equal(scheduler.betas, torch.from_numpy(beta).float())  # what diffusers computes with
    assert scheduler.config.variance_type == d.variance and scheduler.config.clip_sample is True
    pipe = ddpmkit.load(tmp_path / "run", device="cpu")
    assert all(torch.equal(pipe.model.state_dict()[k], ema[k]) for k in ema)  # the EMA weights were exported
    _check_same_process(pipe, pipeline.scheduler, pipeline.unet.eval(), 8, 1)
    x = torch.randn(3, 1, 8, 8)
    assert (_outputs(unet, x, torch.tensor([0, 7, 29])) - pipe.model(x, torch.tensor([0, 7, 29]))).abs().max() < TOL


def test_round_trips_give_back_the_weights_bit_for_bit(tmp_path):
    save_diffusers(tmp_path / "dm0", TINY_UNET, TINY_SCHEDULER, "flat")
    import_diffusers(tmp_path / "dm0", tmp_path / "run1")
    export_diffusers(tmp_path / "run1", tmp_path / "dm2")
    import_diffusers(tmp_path / "dm2", tmp_path / "run3")
    first, third = (ddpmkit.load(tmp_path / r, device="cpu") for r in ("run1", "run3"))
    a, b = first.model.state_dict(), third.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert first.config.diffusion == third.config.diffusion and first.config.model == third.config.model
    original = st.load_file(tmp_path / "dm0" / "diffusion_pytorch_model.safetensors")
    exported = st.load_file(tmp_path / "dm2" / "unet" / "diffusion_pytorch_model.safetensors")
    assert original.keys() == exported.keys() and all(torch.equal(original[k], exported[k]) for k in original)
    # and the other way: a ddpmkit run through diffusers' format and back, its training weights this time
    _, model, _ = _random_run(tmp_path / "run4", {})
    export_diffusers(tmp_path / "run4", tmp_path / "dm5", ema=False)
    import_diffusers(tmp_path / "dm5", tmp_path / "run6")
    back = ddpmkit.load(tmp_path / "run6", device="cpu").model.state_dict()
    assert all(torch.equal(back[k], model[k]) for k in model)


def test_older_attention_names_import_to_the_same_weights(tmp_path, tiny_flat):
    """Files written by early diffusers name the attention projections query, key, value and proj_attn."""
    import_diffusers(tiny_flat, tmp_path / "new")
    path = tiny_flat / "diffusion_pytorch_model.safetensors"
    names = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    old = {}
    for key, tensor in st.load_file(path).items():
        for new, legacy in names.items():
            key = key.replace(new, legacy)
        old[key] = tensor
    assert any(".query." in k for k in old)
    st.save_file(old, path)
    import_diffusers(tiny_flat, tmp_path / "old")
    a, b = (ddpmkit.load(tmp_path / r, device="cpu").model.state_dict() for r in ("new", "old"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_default_tables_are_those_of_the_installed_diffusers():
    """A key missing from a config means diffusers' default: the tables the importer uses must be those defaults."""
    import inspect

    from diffusers import DDPMScheduler, UNet2DModel

    from ddpmkit.store.diffusers_config import SCHEDULER_DEFAULTS, UNET_DEFAULTS

    for cls, table in ((UNet2DModel, UNET_DEFAULTS), (DDPMScheduler, SCHEDULER_DEFAULTS)):
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k != "self"}
        assert set(defaults) == set(table), cls
        assert all(json.loads(json.dumps(defaults[k])) == table[k] for k in table), cls


@pytest.mark.parametrize("changes, expected", [
    ({}, {"schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "variance": "fixed_large"}),
    ({"beta_schedule": "squaredcos_cap_v2"}, {"schedule": "cosine", "variance": "fixed_large"}),
    ({"trained_betas": [float(b) for b in schedules.linear(20, 1e-3, 0.05)]},
     {"schedule": "linear", "beta_start": 1e-3, "beta_end": 0.05}),
    ({"trained_betas": [float(b) for b in schedules.cosine(20)]}, {"schedule": "cosine"}),
    ({"variance_type": "fixed_small_log", "prediction_type": "v_prediction"}, {"variance": "fixed_small",
                                                                               "parameterization": "v"}),
    ({"variance_type": ..., "timestep_spacing": "trailing", "steps_offset": 1}, {"variance": "fixed_small"}),
])
def test_scheduler_configs_map_to_the_diffusion_section(changes, expected):
    """Named schedules, explicit betas equal to one of ddpmkit's, diffusers' defaults for missing keys."""
    from pathlib import Path

    from ddpmkit.store.diffusers_config import read_scheduler_config

    raw = {**TINY_SCHEDULER, **changes}
    raw = {k: v for k, v in raw.items() if v is not ...}
    got = read_scheduler_config(raw, Path("scheduler_config.json"))
    assert got["timesteps"] == 20 and {k: got[k] for k in expected} == expected


def test_the_importer_never_imports_diffusers(tmp_path, tiny_flat):
    import subprocess
    import sys

    script = (f"import sys; from ddpmkit.cli import main; "
              f"assert main(['import-diffusers', {str(tiny_flat)!r}, '--out', {str(tmp_path / 'run')!r}]) == 0; "
              f"print('DIFFUSERS', sorted(m for m in sys.modules if m.split('.')[0] == 'diffusers'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "DIFFUSERS []" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("folder, preset", [("ddpm-celebahq-256", "celebahq256"), ("ddpm-ema-church-256", "lsun256"),
                                            ("ddpm-cat-256", "lsun256")])
def test_the_256_repositories_configs_are_the_papers_114m_preset(tmp_path, folder, preset):
    """google/ddpm-*-256's config (the layout of SHRUNK256_UNET at full width): the preset's network, no weights."""
    from pathlib import Path

    from ddpmkit.pipeline import build_model
    from ddpmkit.store.diffusers_config import read_scheduler_config, read_unet_config
    from ddpmkit.store.diffusers_io import run_config_for

    unet = {**SHRUNK256_UNET, "block_out_channels": [128, 128, 256, 256, 512, 512], "norm_num_groups": 32,
            "sample_size": 256}
    spec = read_unet_config(unet, Path("config.json"))
    diffusion = read_scheduler_config({**CIFAR10_SCHEDULER, "variance_type": "fixed_small"}, Path("s.json"))
    (tmp_path / folder).mkdir()
    config = run_config_for(spec, diffusion, tmp_path / folder)
    assert config.model.preset == preset and config.diffusion.variance == "fixed_small"
    with torch.device("meta"):
        net = build_model(config, 256, 3)
    assert sum(p.numel() for p in net.parameters()) == 113_673_219
