"""The trainer's data set: a folder goes through the decoded-image cache, built once under torchrun.

With a cache, rank 0 builds (or verifies) the entry while the other ranks wait for it (data/cache.py), then every
rank maps the same file, so the host holds the data set once, in the page cache. Without one (`--no-cache`, or a
source that is an array: see data/cache.py), every rank loads its own copy into memory, as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..config import DataConfig
from ..data import ImageDataset, load_dataset
from ..data.cache import as_image_cache, release
from . import distributed


def load_training_data(d: DataConfig, info: distributed.DistInfo, cache=None, *, progress: bool = True,
                       say: Callable[[str], None] = print) -> ImageDataset:
    """`load_dataset` of the run's data config; cache as `load_dataset` takes it (None: in memory)."""
    image_cache = as_image_cache(cache)
    if image_cache is not None:  # every rank takes part in the token's broadcast
        image_cache = replace(image_cache, rank=info.rank, token=distributed.shared_token(info),
                              progress=image_cache.progress and progress and info.is_main)
    data = load_dataset(d.spec, image_size=d.image_size, channels=d.channels, skip_bad=d.skip_bad,
                        cache=image_cache)
    if image_cache is not None and info.active:
        distributed.barrier(info)  # every rank has its data: the builder's failure notes are no longer needed
        release(image_cache.root, image_cache)
    if data.num_skipped:
        say(f"data: {data.num_skipped} bad file(s) skipped (--skip-bad)")
    return data
