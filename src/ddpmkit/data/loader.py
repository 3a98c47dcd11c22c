"""`load_dataset(spec)`: decide what the spec names and hand it to the module for that format.

Spec forms, checked in this order:
1. "digits" -> builtin.py; "fashion-mnist" (or "fashion_mnist") -> idx.py on Debian's package folder. These names
   win over a folder of the same name in the working directory; write "./digits" to mean the folder.
2. A folder: IDX files -> idx.py; CIFAR python batches (or their release subfolder) -> cifar.py; else a folder of
   images -> folder.py.
3. A file: .npz/.npy -> npz.py; an IDX images file -> idx.py; an image file -> a data set of that one image.

With `cache`, a folder of images goes through the decoded-image cache (cache.py: which sources and why, the key).
"""

from __future__ import annotations

import os
from pathlib import Path

from ddpmkit.data import builtin, cifar, folder, idx, npz
from ddpmkit.data.cache import as_image_cache, load_folder_cached
from ddpmkit.data.common import check_options, file_error, show
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.errors import DataError

EXPECTED = "expected digits, fashion-mnist, a folder of images, IDX or CIFAR files, or an .npz/.npy file"
ARRAY_SUFFIXES = (".npz", ".npy")


def load_dataset(spec: str, *, image_size: int | None = None, channels: int | None = None, split: str = "train",
                 skip_bad: bool = False, cache=None) -> ImageDataset:
    """Load the data set `spec` names as uint8 images (N, H, W, C); DataError (one line) for any bad input.

    image_size: resize the shorter side and centre-crop to this size (None keeps the native size, which must then
    be square and shared by all images). channels: 1 (grey) or 3 (RGB); None keeps the source's. split: "train",
    "test" or "all". skip_bad: in image folders, skip unreadable files (counted in `num_skipped`) instead of failing.
    cache: for a folder of images, None/False decodes into memory (as always); True uses the decoded-image cache in
    $DDPMKIT_CACHE (else ~/.cache/ddpmkit), a path uses that folder, an `ImageCache` says who builds (torchrun);
    the images are then an np.memmap of the cache file.
    """
    check_options(image_size, channels, split)
    options = {"image_size": None if image_size is None else int(image_size),
               "channels": None if channels is None else int(channels)}
    spec = os.fspath(spec)
    builtin_name = spec.strip().lower()
    if builtin_name == "digits":
        return builtin.load_digits(split=split, **options)
    if builtin_name in ("fashion-mnist", "fashion_mnist"):
        return idx.load_fashion_mnist(split=split, **options)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_folder_spec(path, spec, split=split, skip_bad=skip_bad, cache=cache, **options)
    if path.is_file():
        return load_file_spec(path, spec, split=split, skip_bad=skip_bad, **options)
    if path.is_symlink():
        raise file_error(path, "broken symbolic link", "fix the link or pass the data's real path")
    if path.exists():
        raise file_error(path, "is neither a file nor a folder", EXPECTED)
    raise DataError(f"data: no such file or folder {show(spec)} ({EXPECTED})")


def load_folder_spec(path: Path, name: str, *, image_size: int | None, channels: int | None, split: str,
                     skip_bad: bool, cache=None) -> ImageDataset:
    """A folder: IDX, then CIFAR, then a folder of image files."""
    options = {"image_size": image_size, "channels": channels, "split": split}
    if idx.has_idx(path):
        return idx.load_idx_folder(path, name, **options)
    cifar_path = cifar.cifar_folder(path)
    if cifar_path is not None:
        return cifar.load_cifar(cifar_path, name, **options)
    image_cache = as_image_cache(cache)
    if image_cache is not None:
        return load_folder_cached(path, name, skip_bad=skip_bad, cache=image_cache, **options)
    return folder.load_folder(path, name, skip_bad=skip_bad, **options)


def load_file_spec(path: Path, name: str, *, image_size: int | None, channels: int | None, split: str,
                   skip_bad: bool) -> ImageDataset:
    """A single file: an array file, an IDX images file or one image."""
    options = {"image_size": image_size, "channels": channels}
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return npz.load_array_file(path, name, split=split, **options)
    if split == "test":
        raise file_error(path, "a single file has no test split", "pass the test data itself")
    if idx.is_idx_images_file(path):
        return idx.load_idx_file(path, name, **options)
    if folder.is_image_name(path.name):
        return folder.load_files([path], name, skip_bad=skip_bad, **options)
    raise file_error(path, "unknown file type", EXPECTED)
