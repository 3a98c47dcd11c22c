"""train/autoconfig.py: the network line names the network that runs, not only the preset it started from."""

from __future__ import annotations

from types import SimpleNamespace

from ddpmkit.config import load_config
from ddpmkit.pipeline import build_model
from ddpmkit.train.autoconfig import describe_network
from ddpmkit.train.budget import candidates

DATA = SimpleNamespace(image_size=8, channels=1)


def _line(config) -> str:
    return describe_network(build_model(config, 8, 1), config, DATA)


def test_the_network_line_names_the_options_that_changed_the_preset():
    plain = load_config("digits").with_values({"model.preset": "tiny"})
    assert _line(plain).startswith("network: UNet preset tiny at 8x8x1, ")  # nothing changed: as before
    planned = plain.with_values(candidates(8)[1].model)  # what `--minutes` puts over the preset
    line = _line(planned)
    m = planned.model
    assert f"with ch={m.ch}, ch_mult={list(m.ch_mult)}, num_res_blocks={m.num_res_blocks}" in line, line
    assert f"{sum(p.numel() for p in build_model(planned, 8, 1).parameters()):,} parameters" in line
