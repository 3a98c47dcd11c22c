"""CIFAR-10 / CIFAR-100 "python version" folders -> ImageDataset (Krizhevsky 2009).

CIFAR-10: pickled dicts "data_batch_1" .. "data_batch_5" (split "train") and "test_batch" (split "test"), each with
b"data" uint8 (N, 3072) and b"labels". CIFAR-100: "train" and "test" with b"fine_labels" (the 100 classes, which we
keep) and b"coarse_labels". Each row is 3 planes of 32x32 (R, G, B), i.e. CHW order.

The files are pickles, and unpickling can run any code a file names. `SafeUnpickler` resolves only the few globals
that numpy's array pickles need (array reconstruction and dtype) and refuses everything else, so a crafted file
can at worst give a DataError.
"""

from __future__ import annotations

import importlib
import pickle
import struct
from pathlib import Path

import numpy as np

from ddpmkit.data.common import concat_parts, file_error, finish
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.errors import DataError

CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}
RELEASE_SUBFOLDERS = ("cifar-10-batches-py", "cifar-100-python")  # what the official archives unpack to
SIDE = 32
# batches.meta's label_names of CIFAR-10, in label order (Krizhevsky 2009)
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
LATIN1_NAMES = ("latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "iso8859_1")
PICKLE_PROTO_OPCODE = b"\x80"  # protocol >= 2 pickles start with PROTO; CIFAR's were written with protocol 2


def _numpy_attr(module_suffix: str, name: str) -> object:
    """numpy's private `_core.<module_suffix>.<name>`; numpy < 2 names the package `core` instead."""
    for package in ("numpy._core", "numpy.core"):
        try:
            return getattr(importlib.import_module(f"{package}.{module_suffix}"), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"numpy has no {module_suffix}.{name}")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 writes bytes in protocol-2 pickles as _codecs.encode(text, "latin1"); allow only that codec."""
    if not isinstance(encoding, str) or encoding.lower() not in LATIN1_NAMES:  # no codec lookup: no imports
        raise pickle.UnpicklingError(f"refusing _codecs.encode with codec {encoding!r}")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], object]:
    """(module, name) -> object: the only globals an array pickle from numpy 1 or 2 may name."""
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_encode}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _numpy_attr("multiarray", "_reconstruct")
        allowed[(f"{package}.multiarray", "scalar")] = _numpy_attr("multiarray", "scalar")
        allowed[(f"{package}.numeric", "_frombuffer")] = _numpy_attr("numeric", "_frombuffer")
    return allowed


class SafeUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy array globals; any other global is refused."""

    def __init__(self, file, path: Path) -> None:  # noqa: ANN001 -- any binary file object
        super().__init__(file, encoding="bytes")  # CIFAR was pickled by Python 2: keep its str as bytes
        self.path = path
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> object:
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        raise file_error(self.path, f"refusing to unpickle {module}.{name} (only numpy arrays are allowed)",
                         "this is not a CIFAR batch file; do not use files from an untrusted source")


def safe_load(path: Path) -> object:
    """Unpickle `path` with `SafeUnpickler`; DataError for anything that is not a clean pickle of arrays."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f, path).load()
    except DataError:
        raise
    except PermissionError:
        raise file_error(path, "permission denied", "make the file readable (chmod a+r)") from None
    except OSError as err:
        raise file_error(path, f"cannot read ({err.strerror or err})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            struct.error, MemoryError, RecursionError) as err:
        raise file_error(path, f"not a readable CIFAR pickle ({type(err).__name__}: {err})",
                         "download the 'python version' of CIFAR again") from None


def cifar_files(folder: Path) -> dict[str, list[str]] | None:
    """Which CIFAR layout `folder` has (CIFAR10_FILES or CIFAR100_FILES), or None."""
    if (folder / "data_batch_1").is_file() or (folder / "test_batch").is_file():
        return CIFAR10_FILES
    for name in ("train", "test"):
        path = folder / name
        if path.is_file() and _starts_like_pickle(path):
            return CIFAR100_FILES
    return None


def _starts_like_pickle(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(1) == PICKLE_PROTO_OPCODE
    except OSError:
        return True  # let the loader report why it cannot be read


def cifar_folder(folder: Path) -> Path | None:
    """`folder` itself if it is a CIFAR folder, or its official release subfolder if it holds one, else None."""
    if cifar_files(folder):
        return folder
    for sub in RELEASE_SUBFOLDERS:
        if cifar_files(folder / sub):
            return folder / sub
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> (images uint8 (N, 32, 32, 3), labels int64 (N,))."""
    batch = safe_load(path)
    if not isinstance(batch, dict):
        raise file_error(path, f"holds a {type(batch).__name__}, expected a dict", "is this a CIFAR batch file?")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise file_error(path, f"has keys {sorted(map(str, batch))}, expected 'data' and 'labels' or "
                               "'fine_labels'", "is this a CIFAR batch file?")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * SIDE * SIDE:
        raise file_error(path, f"data is {data.dtype} {data.shape}, expected uint8 (N, {3 * SIDE * SIDE})",
                         "is this a CIFAR batch file?")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise file_error(path, f"labels are not integers ({err})", "is this a CIFAR batch file?") from None
    if len(labels) != len(data):
        raise file_error(path, f"has {len(data)} images but {len(labels)} labels", "is the file complete?")
    images = data.reshape(-1, 3, SIDE, SIDE).transpose(0, 2, 3, 1)  # CHW rows -> (N, 32, 32, 3)
    return images, labels


def load_cifar(folder: Path, name: str, *, image_size: int | None, channels: int | None,
               split: str) -> ImageDataset:
    """The requested split(s) of a CIFAR-10 or CIFAR-100 python-version folder."""
    layout = cifar_files(folder)
    assert layout is not None, "load_cifar is called only on a folder that cifar_folder accepted"
    names = layout["train"] + layout["test"] if split == "all" else layout[split]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise file_error(folder / missing[0], f"missing: the CIFAR folder lacks this file for split '{split}'",
                         "download the complete 'python version' of CIFAR")
    parts = [(n, *read_batch(folder / n)) for n in names]
    images, labels = concat_parts(parts, folder, image_size=image_size, channels=channels)
    return finish(images, labels, name, image_size=image_size, channels=channels,
                  class_names=CIFAR10_CLASSES if layout is CIFAR10_FILES else cifar100_names(folder))


def cifar100_names(folder: Path) -> list[str] | None:
    """fine_label_names from CIFAR-100's "meta" file (read as safely as the batches), or None without one."""
    if not (folder / "meta").is_file():
        return None
    meta = safe_load(folder / "meta")
    names = meta.get("fine_label_names", meta.get(b"fine_label_names")) if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != 100:
        return None
    return [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
