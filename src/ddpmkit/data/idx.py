"""MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST, ...) -> ImageDataset.

The IDX format (LeCun et al., http://yann.lecun.com/exdb/mnist/): a 4-byte big-endian magic number 0x00000800 +
(data type << 8) + ndim, then ndim big-endian uint32 sizes, then the data, row-major. We accept only unsigned bytes:
magic 0x00000803 for images (N, H, W) and 0x00000801 for labels (N,). Files may be gzip-compressed (".gz").

Layout: a folder holding "train-images-idx3-ubyte" (split "train") and/or "t10k-images-idx3-ubyte" (split "test"),
with "-labels-idx1-ubyte" files beside them (optional). The dotted names of some MNIST mirrors
("train-images.idx3-ubyte") are accepted too. Split "all" is train then test.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ddpmkit.data.common import concat_parts, file_error, finish
from ddpmkit.data.dataset import ImageDataset

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
MAX_BYTES = 1 << 34  # 16 GiB: far above any IDX data set, far below what a corrupt header can claim

# Debian's dataset-fashion-mnist package installs the four .gz files here.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Zalando's names of the labels 0 .. 9 (github.com/zalandoresearch/fashion-mnist, README)
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def idx_candidates(folder: Path, prefix: str, kind: str) -> list[Path]:
    """The file names an IDX `kind` ("images" or "labels") of one split may have, in order of preference."""
    ndim = 3 if kind == "images" else 1
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [folder / (stem + ext) for stem in stems for ext in ("", ".gz")]


def find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    """The first existing file among `idx_candidates`, or None."""
    return next((p for p in idx_candidates(folder, prefix, kind) if p.is_file()), None)


def has_idx(folder: Path) -> bool:
    """True if `folder` holds IDX images of any split."""
    return any(find_idx(folder, prefix, "images") for prefix in SPLIT_PREFIX.values())


def is_idx_images_file(path: Path) -> bool:
    """True for a file named like IDX images ("...-images-idx3-ubyte[.gz]"), which may be given directly."""
    name = path.name.lower().removesuffix(".gz")
    return name.endswith(("idx3-ubyte", ".idx3"))


def open_binary(path: Path) -> BinaryIO:
    """The file opened for reading, through gzip if its name ends in .gz."""
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def parse_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one unsigned-byte IDX file with the expected `magic`; returns uint8 of the header's shape."""
    try:
        with open_binary(path) as f:
            return _parse_stream(f, path, magic)
    except PermissionError:
        raise file_error(path, "permission denied", "make the file readable (chmod a+r)") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise file_error(path, f"corrupt gzip data ({err or type(err).__name__})",
                         "download it again, or gunzip it to check") from None
    except OSError as err:
        raise file_error(path, f"cannot read ({err.strerror or err})") from None


def _parse_stream(f: BinaryIO, path: Path, magic: int) -> np.ndarray:
    # Read exactly what the header promises, so neither a lying header nor a gzip bomb can exhaust memory.
    head = f.read(4)
    found = int.from_bytes(head, "big") if len(head) == 4 else None
    if found != magic:
        what = {IMAGES_MAGIC: "images", LABELS_MAGIC: "labels"}
        shown = "missing (file too short)" if found is None else f"0x{found:08X}"
        hint = f" (that is an IDX {what[found]} file)" if found in what else ""
        raise file_error(path, f"IDX magic number {shown}{hint}, expected 0x{magic:08X} ({what[magic]})",
                         "check that this is the right MNIST-style file and not renamed")
    ndim = magic & 0xFF
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise file_error(path, "truncated IDX header", "download the file again")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    expected = math.prod(shape)
    if expected > MAX_BYTES:
        raise file_error(path, f"IDX header claims {'x'.join(map(str, shape))} bytes, more than "
                               f"{MAX_BYTES >> 30} GiB", "the file is corrupt; download it again")
    data = f.read(expected)
    if len(data) < expected:
        raise file_error(path, f"truncated: header says {'x'.join(map(str, shape))} = {expected} data bytes, "
                               f"file has {len(data)}", "download the file again")
    if f.read(1):
        raise file_error(path, f"has bytes after the {'x'.join(map(str, shape))} data the header announces",
                         "the file is corrupt; download it again")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def read_split(images_path: Path, labels_path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """(images (N, H, W, 1), labels (N,) or None) of one IDX split, checking that the counts agree."""
    images = parse_idx(images_path, IMAGES_MAGIC)[..., None]
    if labels_path is None:
        return images, None
    labels = parse_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(images):
        raise file_error(labels_path, f"has {len(labels)} labels but {images_path.name} has {len(images)} images",
                         "use the labels file of the same split")
    return images, labels.astype(np.int64)


def load_idx_folder(folder: Path, name: str, *, image_size: int | None, channels: int | None,
                    split: str) -> ImageDataset:
    """The requested split(s) of an IDX folder."""
    prefixes = list(SPLIT_PREFIX.values()) if split == "all" else [SPLIT_PREFIX[split]]
    parts = []
    for prefix in prefixes:
        images_path = find_idx(folder, prefix, "images")
        if images_path is None:
            raise file_error(folder, f"has no {prefix}-images-idx3-ubyte[.gz] file for split '{split}'",
                             "choose another split, or add the file")
        parts.append((images_path.name, *read_split(images_path, find_idx(folder, prefix, "labels"))))
    images, labels = concat_parts(parts, folder, image_size=image_size, channels=channels)
    return finish(images, labels, name, image_size=image_size, channels=channels)


def load_idx_file(path: Path, name: str, *, image_size: int | None, channels: int | None) -> ImageDataset:
    """One IDX images file given directly; its labels are used if the matching file lies beside it."""
    labels_name = path.name.replace("images", "labels").replace("idx3", "idx1")
    labels_path = path.with_name(labels_name)
    images, labels = read_split(path, labels_path if labels_name != path.name and labels_path.is_file() else None)
    return finish(images, labels, name, image_size=image_size, channels=channels)


def load_fashion_mnist(*, image_size: int | None, channels: int | None, split: str) -> ImageDataset:
    """Fashion-MNIST from the Debian package's folder."""
    if not has_idx(FASHION_MNIST_DIR):
        raise file_error(FASHION_MNIST_DIR, "Fashion-MNIST not found",
                         "install it with `apt-get install dataset-fashion-mnist`, or pass a folder of IDX files")
    ds = load_idx_folder(FASHION_MNIST_DIR, "fashion-mnist", image_size=image_size, channels=channels, split=split)
    if ds.labels is not None:
        ds.class_names = list(FASHION_MNIST_CLASSES)
    return ds
