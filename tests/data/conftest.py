"""Fixtures shared by the data tests: writing small images and checking one-line DataErrors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddpmkit.errors import DataError


@pytest.fixture
def data_error():
    """check(call, *parts): `call()` must raise DataError with a one-line message holding every part."""

    def check(call, *parts: str) -> str:
        with pytest.raises(DataError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message and "\r" not in message, message
        for part in parts:
            assert part in message, f"{part!r} not in {message!r}"
        return message

    return check


@pytest.fixture
def save_image():
    """save(path, pixels_or_image, mode=None, **save_kwargs) -> Path: write an image file, making folders."""

    def save(path: Path, pixels, mode: str | None = None, **kwargs) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        img = pixels if isinstance(pixels, Image.Image) else Image.fromarray(np.asarray(pixels))
        if mode is not None and img.mode != mode:
            img = img.convert(mode)
        img.save(path, **kwargs)
        return path

    return save


@pytest.fixture
def rgb8() -> np.ndarray:
    """A fixed 8x8 RGB test pattern with many distinct levels."""
    return (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 5 % 256).astype(np.uint8)
