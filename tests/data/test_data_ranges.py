"""Contracts of ImageDataset, check_enough, the load options, and the uint8 <-> [-1, 1] scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpmkit.data import ImageDataset, check_enough, from_model_range, load_dataset, to_model_range


def test_to_model_range_scales_and_moves_channels():
    x = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).reshape(1, 2, 3, 1)
    y = to_model_range(x)
    assert y.dtype == torch.float32 and y.shape == (1, 1, 2, 3)
    expected = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.float32) / 127.5 - 1
    torch.testing.assert_close(y.flatten(), expected)
    assert y.min() == -1 and y.max() == 1


def test_round_trip_is_lossless_for_all_levels():
    levels = torch.arange(256, dtype=torch.uint8).reshape(2, 8, 16)
    rgb = torch.stack([levels, levels.flip(-1), levels.roll(3, -1)], dim=-1)  # (2, 8, 16, 3)
    back = from_model_range(to_model_range(rgb))
    assert back.dtype == torch.uint8 and back.shape == rgb.shape
    assert torch.equal(back, rgb)


def test_from_model_range_clips_rounds_and_handles_nan():
    x = torch.tensor([-3.0, -1.0, 0.0, 0.999, 1.0, 7.0, float("nan"), -0.9961]).reshape(1, 1, 2, 4)
    out = from_model_range(x).flatten().tolist()
    assert out == [0, 0, 128, 255, 255, 255, 128, 0]


def test_to_model_range_refuses_float_input():
    with pytest.raises(TypeError):
        to_model_range(torch.zeros(1, 2, 2, 1))


def test_image_dataset_properties_and_check_enough(data_error):
    ds = ImageDataset(np.zeros((5, 4, 4, 3), np.uint8), None, "tiny")
    assert (len(ds), ds.image_size, ds.channels, ds.num_skipped, ds.skipped) == (5, 4, 3, 0, [])
    check_enough(ds, 5)
    data_error(lambda: check_enough(ds, 128), "data set tiny has 5 images, fewer than one batch of 128",
               "--batch-size")


@pytest.mark.parametrize("options", [{"image_size": 0}, {"image_size": 2.5}, {"channels": 2}, {"split": "val"}])
def test_impossible_options_are_data_errors(options, data_error):
    data_error(lambda: load_dataset("digits", **options), "data:")
