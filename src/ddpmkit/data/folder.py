"""A folder of image files (or one image file) -> ImageDataset.

Decisions:
- Files are found recursively by extension (.png .jpg .jpeg .bmp .webp .tif .tiff, any case; TIFF because 16-bit,
  float and CMYK images mostly come as TIFF) and read in sorted relative-path order, so the data set is the same
  on every machine. Hidden files and folders (".DS_Store", "._x.png" from macOS, ".ipynb_checkpoints") are
  skipped. Symlinked folders are followed, each real folder once, so a link loop cannot hang the scan.
- Labels: when every image lies inside a subfolder of the split's folder (none loose beside them), each visible
  subfolder is a class, as torchvision's ImageFolder reads it: the sorted subfolder names give the indices 0 .. K-1
  and the class names, and an image's class is its first-level subfolder (found recursively inside it). A
  subfolder with no images is still a class (with no images; `ddpm train --conditional` refuses that). Any other
  layout has labels None. Unconditional training ignores labels, so reading them is never a guess that matters.
- Splits: a folder with both "train" and "test" subfolders has those splits ("all" = both); any other folder is one
  split, returned for "train" and "all", while "test" is refused (pass the folder of test images instead).
- Channels: without `channels`, the data set is grey if most files are single-channel modes, else RGB.
- Without `image_size`, every image must have the same size; with it, each is resized (shorter side) and
  centre-cropped, see `common.fit_square`.
- A bad file is a DataError, or with skip_bad=True is skipped: logged as one warning line, then one summary line.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ddpmkit.data.common import file_error, finish, fit_square, show, to_channels
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.data.decode import native_channels, read_image
from ddpmkit.errors import DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def is_image_name(name: str) -> bool:
    """True for a visible file whose extension is one we decode."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def load_folder(root: Path, name: str, *, image_size: int | None, channels: int | None, split: str,
                skip_bad: bool) -> ImageDataset:
    """Every image under `root` (see module docstring for the rules)."""
    files, skipped = list_files(root, split, skip_bad)
    labels, names = class_subfolder_labels(split_folders(root, split), files)
    return load_files(files, name, image_size=image_size, channels=channels, skip_bad=skip_bad, skipped=skipped,
                      labels=labels, class_names=names)


def list_files(root: Path, split: str, skip_bad: bool) -> tuple[list[Path], list[str]]:
    """The image files of `split` under `root` in load order, and the skipped-folder messages (with skip_bad)."""
    skipped: list[str] = []
    files: list[Path] = []
    folders = split_folders(root, split)
    for folder in folders:
        files += find_images(folder, skipped if skip_bad else None)
    if not files and not skipped:
        raise file_error(root, f"no images found (looked for {' '.join(IMAGE_EXTENSIONS)} files, recursively)",
                         "check the path, or pass an IDX, CIFAR or .npz/.npy data set")
    return files, skipped


def class_subfolder_labels(folders: list[Path], files: list[Path]) -> tuple[list[int] | None, list[str] | None]:
    """(label of each file, sorted class names) when every file lies in a subfolder of its split folder, else None."""
    names: set[str] = set()
    first_parts: list[str] = []
    for folder in folders:
        names |= {p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")}
    for path in files:
        parent = next(f for f in folders if path.is_relative_to(f))
        parts = path.relative_to(parent).parts
        if len(parts) < 2:
            return None, None  # an image beside the subfolders: not a class layout
        first_parts.append(parts[0])
    ordered = sorted(names)
    index = {n: i for i, n in enumerate(ordered)}
    return [index[p] for p in first_parts], ordered


def load_files(files: list[Path], name: str, *, image_size: int | None, channels: int | None, skip_bad: bool,
               skipped: list[str] | None = None, labels: list[int] | None = None,
               class_names: list[str] | None = None) -> ImageDataset:
    """Decode `files` in order into one data set; with skip_bad, bad files are logged and left out (with their
    labels, when `labels` gives one per file)."""
    skipped = list(skipped or [])
    decoded: list[tuple[Path, Image.Image, str]] = []
    kept: list[int] = []
    for i, path in enumerate(files):
        try:
            img, mode = read_regular_image(path)
        except DataError as err:
            if not skip_bad:
                raise
            skipped.append(str(err))
            log.warning("data: skipping %s", str(err).removeprefix("data: "))
            continue
        decoded.append((path, fit_square(img, image_size) if image_size else img, mode))
        kept.append(i)
    if skipped:
        log.warning("data: skipped %d bad file(s) of %d in %s", len(skipped), len(files), show(name))
    if not decoded:
        first = skipped[0].removeprefix("data: ") if skipped else "none found"
        raise file_error(name, f"none of the {len(files)} image file(s) could be read; first problem: {first}")
    check_same_size(decoded)
    target = channels or majority_channels([mode for _, _, mode in decoded])
    images = np.stack([as_array(img, target) for _, img, _ in decoded])
    kept_labels = None if labels is None else np.asarray([labels[i] for i in kept], dtype=np.int64)
    return finish(images, kept_labels, name, image_size=None, channels=None, skipped=skipped,
                  class_names=class_names)


def read_regular_image(path: Path) -> tuple[Image.Image, str]:
    """`decode.read_image`, after refusing what is not a regular file (a FIFO would block open() forever)."""
    if path.is_symlink() and not path.exists():
        raise file_error(path, "broken symbolic link", "fix or remove the link")
    if path.exists() and not path.is_file():
        raise file_error(path, "not a regular file", "remove it from the data folder")
    return read_image(path)


def split_folders(root: Path, split: str) -> list[Path]:
    """The folders that make up `split` of `root`."""
    train, test = root / "train", root / "test"
    if train.is_dir() and test.is_dir():
        return {"train": [train], "test": [test], "all": [train, test]}[split]
    if split == "test":
        raise file_error(root, "has no test split (no 'train' and 'test' subfolders)",
                         "pass the folder of test images itself")
    return [root]


def find_images(root: Path, skipped: list[str] | None) -> list[Path]:
    """Image files under `root`, sorted by relative path. An unreadable subfolder is an error, or skipped."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def on_error(err: OSError) -> None:
        bad = file_error(err.filename or root, f"cannot list folder ({err.strerror or err})",
                         "make it readable or remove it")
        if skipped is None:
            raise bad
        skipped.append(str(bad))
        log.warning("data: skipping %s", str(bad).removeprefix("data: "))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        stat = os.stat(dirpath)
        if (stat.st_dev, stat.st_ino) in seen:  # reached again through a symlink: a loop or a duplicate
            dirnames.clear()
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, f) for f in filenames if is_image_name(f)]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def check_same_size(decoded: list[tuple[Path, Image.Image, str]]) -> None:
    """Without --image-size every image must share the first image's size; name the first that does not."""
    first_path, first, _ = decoded[0]
    for path, img, _ in decoded[1:]:
        if img.size != first.size:
            raise file_error(path, f"is {img.width}x{img.height} pixels but {first_path.name} is "
                                   f"{first.width}x{first.height} (width x height)",
                             "pass --image-size N to resize and centre-crop all images to N x N")


def majority_channels(modes: list[str]) -> int:
    """1 if most files are single-channel grey modes, else 3 (a tie keeps colour)."""
    grey = sum(native_channels(mode) == 1 for mode in modes)
    return 1 if grey > len(modes) - grey else 3


def as_array(img: Image.Image, channels: int) -> np.ndarray:
    """8-bit "L"/"RGB" image -> uint8 (H, W, channels)."""
    pixels = np.asarray(img).reshape(img.height, img.width, -1)
    return to_channels(pixels[None], channels)[0]
