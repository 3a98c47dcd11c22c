"""Fixtures of the store tests: a tiny diffusers folder, saved by diffusers itself."""

from __future__ import annotations

from pathlib import Path

import pytest
from dm_folders import TINY_SCHEDULER, TINY_UNET, save_diffusers


@pytest.fixture
def tiny_flat(tmp_path) -> Path:
    folder = tmp_path / "tiny-diffusers"
    save_diffusers(folder, TINY_UNET, TINY_SCHEDULER)
    return folder
