"""Shared test settings: few threads, so parallel helpers and CI's two cores are not oversubscribed."""

import os

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)
