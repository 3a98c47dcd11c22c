"""NumPy .npz / .npy files of uint8 images -> ImageDataset.

Always loaded with allow_pickle=False: an array file must never be able to run code.

Decisions:
- Which array holds the images (.npz): for split "train" the first of "images", "x_train", "x", "arr_0" present,
  else the first array in the file that is not a labels array; for "test" "x_test"; for "all" "x_train" then
  "x_test" when both exist, else the "train" choice. A file with only one image array (a .npy file, or an .npz
  holding only arr_0, or images and their labels) is the images to use whatever the split: the user passed the
  file they mean. Only a file with several image arrays and no "x_test" has no test split (pass --split train).
- Labels (the rule `ddpm train --conditional` relies on): "y_train" / "y_test" for "x_train" / "x_test"; for any
  other image array "labels", else "y", else, for "arr_0" only, a 1-D integer "arr_1" (the labels that
  `ddpm sample --npz` and OpenAI's guided-diffusion scripts write beside the samples). Integers, one per image.
  Without them, labels are None.
- Shapes: (N, H, W) is grey, (N, H, W, C) with C = 1 or 3 as is; C = 4 (RGBA) is composited on white, the same
  rule as transparent image files. Channels-first (N, C, H, W) is refused with the transpose that fixes it, rather
  than guessed, because (N, 3, 32, 3) cannot be told apart from it.
- dtype must be uint8: other types are refused with the conversion to use, never silently rescaled.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ddpmkit.data.common import concat_parts, file_error, finish, with_alpha_removed
from ddpmkit.data.dataset import ImageDataset

TRAIN_KEYS = ("images", "x_train", "x", "arr_0")
LABEL_KEYS = ("labels", "y", "y_train", "y_test")
SAMPLE_LABELS = "arr_1"  # the labels beside the samples in arr_0, in the ADM sampling format
LOAD_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error, struct.error)


def load_array_file(path: Path, name: str, *, image_size: int | None, channels: int | None,
                    split: str) -> ImageDataset:
    """Images (and labels, if any) of an .npz or .npy file."""
    arrays = read_arrays(path, split)
    parts = [(f"'{key}'", check_images(images, path, key), check_labels(labels, path, label_key, len(images)))
             for key, images, label_key, labels in arrays]
    images, labels = concat_parts(parts, path, image_size=image_size, channels=channels)
    return finish(images, labels, name, image_size=image_size, channels=channels)


def read_arrays(path: Path, split: str) -> list[tuple[str, np.ndarray, str | None, np.ndarray | None]]:
    """[(image key, images, label key, labels or None)] for `split`, read with allow_pickle=False."""
    try:
        # Our own file handle, closed on every path: np.load(path) leaks it when the zip directory is corrupt.
        with open(path, "rb") as f:
            loaded = np.load(f, allow_pickle=False)  # an ndarray for .npy data, an NpzFile for .npz data
            if isinstance(loaded, np.ndarray):
                return [("array", loaded, None, None)]  # one array: the images, whatever the split
            with loaded as npz:
                out = []
                for key, label_key in choose_keys(list(npz.files), path, split):
                    labels = npz[label_key] if label_key else None
                    if label_key == SAMPLE_LABELS and not _is_label_vector(labels):
                        label_key, labels = None, None  # arr_1 holds something else than labels: not ours
                    out.append((key, npz[key], label_key, labels))
                return out
    except PermissionError:
        raise file_error(path, "permission denied", "make the file readable (chmod a+r)") from None
    except LOAD_ERRORS as err:
        raise file_error(path, f"not a readable NumPy file ({type(err).__name__}: {err})",
                         "save images with np.savez(path, images=x) or np.save(path, x)") from None


def choose_keys(keys: list[str], path: Path, split: str) -> list[tuple[str, str | None]]:
    """[(image key, label key or None)] of an .npz for `split` (rules in the module docstring)."""
    image_arrays = [k for k in keys if k not in LABEL_KEYS and not (k == SAMPLE_LABELS and "arr_0" in keys)]
    if split == "test" and "x_test" not in keys and len(image_arrays) == 1:
        split = "train"  # a file with one image array is the images to use, whatever the split
    if split == "test" or (split == "all" and "x_train" in keys and "x_test" in keys):
        if "x_test" not in keys:
            raise file_error(path, f"has no test split (no 'x_test' array; it has {', '.join(keys) or 'none'})",
                             "pass --split train (or all) to use its images, or the test images' file itself")
        image_keys = ["x_test"] if split == "test" else ["x_train", "x_test"]
    else:
        candidates = [k for k in TRAIN_KEYS if k in keys] + image_arrays
        if not candidates:
            raise file_error(path, f"has no image array (arrays: {', '.join(keys) or 'none'})",
                             "save images with np.savez(path, images=x)")
        image_keys = candidates[:1]
    return [(key, label_key_for(key, keys)) for key in image_keys]


def label_key_for(image_key: str, keys: list[str]) -> str | None:
    """The labels array that belongs to `image_key`, if the file has one."""
    options = {"x_train": ("y_train",), "x_test": ("y_test",), "arr_0": ("labels", "y", SAMPLE_LABELS)}
    return next((k for k in options.get(image_key, ("labels", "y")) if k in keys), None)


def _is_label_vector(array: np.ndarray | None) -> bool:
    return array is not None and array.ndim == 1 and np.issubdtype(array.dtype, np.integer)


def check_images(images: np.ndarray, path: Path, key: str) -> np.ndarray:
    """Validate an image array -> uint8 (N, H, W, C) with C in {1, 3}."""
    where = f"array '{key}'"
    if images.dtype != np.uint8:
        if np.issubdtype(images.dtype, np.floating):
            nan = " and holds NaN values" if np.isnan(images).any() else ""
            raise file_error(path, f"{where} has dtype {images.dtype}{nan}, expected uint8",
                             "convert with (x*255).round().astype(np.uint8) if x is in [0, 1]")
        raise file_error(path, f"{where} has dtype {images.dtype}, expected uint8",
                         "convert with x.astype(np.uint8) after checking that values are in 0..255")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise file_error(path, f"{where} has shape {images.shape}, expected (N, H, W) or (N, H, W, C)",
                         "save a stack of images, one per first index")
    if images.shape[3] == 4:
        images = with_alpha_removed(images)
    if images.shape[3] not in (1, 3):
        hint = ("transpose channels-first data with x.transpose(0, 2, 3, 1)" if images.shape[1] in (1, 3, 4)
                else "use 1 (grey), 3 (RGB) or 4 (RGBA) channels in the last axis")
        raise file_error(path, f"{where} has shape {images.shape}: last axis is {images.shape[3]} channels, "
                               "expected 1, 3 or 4", hint)
    return images


def check_labels(labels: np.ndarray | None, path: Path, key: str | None, count: int) -> np.ndarray | None:
    """Validate a labels array -> int64 (count,), or None."""
    if labels is None:
        return None
    if not np.issubdtype(labels.dtype, np.integer) or labels.shape != (count,):
        raise file_error(path, f"array '{key}' is {labels.dtype} {labels.shape}, expected {count} integer labels",
                         "store one integer label per image, or leave the labels out")
    return labels.astype(np.int64)
