"""Building one entry of the decoded-image cache: decode a folder once, in a process pool, into a temporary entry.

The entry is a folder `images-<key>/` holding `images.u8` (the raw uint8 bytes of an (N, H, W, C) array, C order),
`labels.npy` when the data set has labels, and `manifest.json` (written last). It is built beside its final place
as `.images-<key>.tmp-<pid>/`, every file fsynced, then renamed into place; until that rename nothing under the
entry's name exists that could be read, so a build killed at any point leaves no usable partial cache, and the next
run starts the build over (see `cache.py`). The pixels are exactly those of `folder.load_files`: the same decode,
`fit_square` and channel rule, so a cached data set is bit-identical to the in-memory one.

Channels: with `channels` unset the in-memory path picks grey if most decoded files are grey, which is only known at
the end. Here each image is written as RGB (grey repeated, as `to_channels` does) and, if grey wins, the file is
converted in one streaming pass; BT.601 luma of a repeated grey level is that level, so the result is exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ddpmkit.data.common import file_error, fit_square, show, to_channels
from ddpmkit.data.decode import native_channels
from ddpmkit.data.folder import as_array, read_regular_image
from ddpmkit.errors import DataError
from ddpmkit.fileio import atomic_path, fsync_dir
from ddpmkit.store.faults import fault_point

log = logging.getLogger("ddpmkit.data.cache")

FORMAT = "ddpmkit-image-cache"
FORMAT_VERSION = 1
IMAGES, LABELS, MANIFEST = "images.u8", "labels.npy", "manifest.json"
CHUNK = 32  # images per task of the pool and per write
POOL_MIN = 256  # fewer files are decoded in this process: starting the workers would cost more than it saves
READ_BLOCK = 16 << 20  # bytes per read when hashing or converting a file


@dataclass
class Source:
    """What a folder source is made of: its files in load order with their (size, mtime_ns), and the settings."""

    root: Path
    split: str
    files: list[Path]
    stats: list[tuple[int, int]]
    listing_skipped: list[str]
    settings: dict = field(default_factory=dict)  # image_size, channels, skip_bad

    def rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def listing(self) -> list[list]:
        """[[relative path, size, mtime_ns], ...] as the manifest stores it."""
        return [[self.rel(p), size, mtime] for p, (size, mtime) in zip(self.files, self.stats)]


@dataclass
class Decoded:
    """What the decode pass found: shape, digest and the skipped files' messages."""

    count: int = 0
    size: tuple[int, int] | None = None  # (width, height) of the first image
    first: Path | None = None
    kept: list[int] = field(default_factory=list)  # indices into Source.files of the images written
    mismatch: DataError | None = None
    modes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    sha256: str = ""


def decode_chunk(paths: list[str], image_size: int | None, target: int) -> list[tuple]:
    """In a worker: each file -> (uint8 (H, W, target) or None, file mode, error message or None)."""
    out = []
    for name in paths:
        try:
            img, mode = read_regular_image(Path(name))
        except DataError as err:
            out.append((None, "", str(err)))
            continue
        img = fit_square(img, image_size) if image_size else img
        out.append((as_array(img, target), mode, None))
    return out


def _chunks(source: Source, image_size: int | None, target: int, workers: int):
    """Yield each chunk's decode results in file order: in this process, or from a pool of `workers` processes."""
    names = [str(p) for p in source.files]
    tasks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
    if workers <= 1 or len(names) < POOL_MIN:
        for task in tasks:
            yield decode_chunk(task, image_size, target)
        return
    # fork where there is one (as torch's DataLoader): the workers need no re-import of torch and ddpmkit
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        pending: deque = deque()
        for task in tasks:  # at most 4 chunks per worker in flight, so memory stays bounded
            pending.append(pool.submit(decode_chunk, task, image_size, target))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _take(result: tuple, index: int, source: Source, state: Decoded) -> np.ndarray | None:
    """One decoded file: its pixels to write, or None (skipped, or after a size mismatch). Errors as load_files."""
    pixels, mode, error = result
    path, image_size = source.files[index], source.settings["image_size"]
    if error is not None:
        if not source.settings["skip_bad"]:
            raise DataError(error)
        state.skipped.append(error)
        log.warning("data: skipping %s", error.removeprefix("data: "))
        return None
    size = (pixels.shape[1], pixels.shape[0])
    if state.size is None:
        state.size, state.first = size, path
    elif size != state.size and state.mismatch is None and not image_size:
        # load_files names the first mismatch only after every file decoded (a bad file is reported first)
        state.mismatch = file_error(path, f"is {size[0]}x{size[1]} pixels but {state.first.name} is "
                                          f"{state.size[0]}x{state.size[1]} (width x height)",
                                    "pass --image-size N to resize and centre-crop all images to N x N")
    state.modes.append(mode)
    state.kept.append(index)
    state.count += 1
    return None if state.mismatch is not None else pixels


def decode_into(path: Path, source: Source, name: str, *, workers: int, progress: bool) -> tuple[Decoded, int]:
    """Decode every file of `source` into the raw file `path`; returns (what was found, channels written)."""
    image_size = source.settings["image_size"]
    target = source.settings["channels"] or 3
    state, digest = Decoded(skipped=list(source.listing_skipped)), hashlib.sha256()
    # a with-block: a bad file's error closes the bar first, so the error is printed after it, not inside it
    with tqdm(total=len(source.files), unit="img", desc="decoding images", disable=not progress,
              dynamic_ncols=True) as bar, open(path, "wb") as f:
        done = 0
        for chunk in _chunks(source, image_size, target, workers):
            for result in chunk:
                pixels = _take(result, done, source, state)
                done += 1
                if pixels is not None:
                    data = np.ascontiguousarray(pixels).tobytes()
                    f.write(data)
                    digest.update(data)
            bar.update(len(chunk))
            fault_point("cache:chunk")  # tests kill the build here (DDPMKIT_FAULT=cache:chunk@N)
        f.flush()
        os.fsync(f.fileno())
    _check_decoded(state, source, name)
    state.sha256 = digest.hexdigest()
    channels = target
    if source.settings["channels"] is None and _grey_wins(state.modes):
        state.sha256, channels = _to_grey(path, state), 1
    return state, channels


def _check_decoded(state: Decoded, source: Source, name: str) -> None:
    """The errors load_files and finish raise after decoding, in their order."""
    if state.skipped:
        log.warning("data: skipped %d bad file(s) of %d in %s", len(state.skipped), len(source.files), show(name))
    if state.count == 0:
        first = state.skipped[0].removeprefix("data: ") if state.skipped else "none found"
        raise file_error(name, f"none of the {len(source.files)} image file(s) could be read; first problem: {first}")
    if state.mismatch is not None:
        raise state.mismatch
    width, height = state.size
    if width != height:
        raise file_error(name, f"images are {width}x{height} pixels (width x height), not square",
                         "pass --image-size N to resize and centre-crop them")


def _grey_wins(modes: list[str]) -> bool:
    """folder.majority_channels's rule: grey if most decoded files are grey (a tie keeps colour)."""
    grey = sum(native_channels(mode) == 1 for mode in modes)
    return grey > len(modes) - grey


def _to_grey(path: Path, state: Decoded) -> str:
    """Rewrite the RGB file `path` as grey (BT.601 luma, as to_channels), in blocks; returns the new sha256."""
    width, height = state.size
    per_image = width * height * 3
    rgb = np.memmap(path, dtype=np.uint8, mode="r", shape=(state.count, height, width, 3))
    grey_path, digest = path.with_name(path.name + ".grey"), hashlib.sha256()
    step = max(1, READ_BLOCK // per_image)
    with open(grey_path, "wb") as f:
        for i in range(0, state.count, step):
            data = to_channels(np.asarray(rgb[i : i + step]), 1).tobytes()
            f.write(data)
            digest.update(data)
        f.flush()
        os.fsync(f.fileno())
    del rgb
    os.replace(grey_path, path)
    return digest.hexdigest()


def write_entry(entry: Path, source: Source, name: str, *, workers: int, progress: bool,
                labels_of=None) -> None:
    """Build `entry` from `source` in a temporary folder beside it, then rename it into place (module docstring).

    labels_of(kept file paths) -> int64 labels or None; the data set's labels, stored as labels.npy.
    """
    tmp = entry.with_name(f".{entry.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        state, channels = decode_into(tmp / IMAGES, source, name, workers=workers, progress=progress)
        kept = [source.files[i] for i in state.kept]
        labels = labels_of(kept) if labels_of is not None else None
        manifest = _manifest(source, state, channels, labels is not None)
        if labels is not None:
            manifest["labels_sha256"] = _save_labels(tmp / LABELS, labels)
        fault_point("cache:before_manifest")
        with atomic_path(tmp / MANIFEST, fsync=True) as part:
            part.write_text(json.dumps(manifest, indent=1))
        fsync_dir(tmp)
        fault_point("cache:before_rename")
        _swap_in(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _manifest(source: Source, state: Decoded, channels: int, has_labels: bool) -> dict:
    width, height = state.size
    return {"format": FORMAT, "version": FORMAT_VERSION, "source": str(source.root), "split": source.split,
            "settings": source.settings, "shape": [state.count, height, width, channels], "dtype": "uint8",
            "images_bytes": state.count * height * width * channels, "images_sha256": state.sha256,
            "labels": has_labels, "skipped": state.skipped, "files": source.listing()}


def _save_labels(path: Path, labels: np.ndarray) -> str:
    with open(path, "wb") as f:
        np.save(f, np.asarray(labels, dtype=np.int64), allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return sha256_file(path)


def _swap_in(tmp: Path, entry: Path) -> None:
    """Rename the finished `tmp` to `entry`; an old entry is moved aside first and deleted after."""
    trash = entry.with_name(f".{entry.name}.trash-{os.getpid()}")
    if entry.exists():
        os.rename(entry, trash)
        fault_point("cache:swap")
    os.rename(tmp, entry)
    fsync_dir(entry.parent)
    shutil.rmtree(trash, ignore_errors=True)


def remove_leftovers(entry: Path) -> None:
    """Temporary and trash folders of `entry` left by killed builds (call with the entry's lock held)."""
    for stale in entry.parent.glob(f".{entry.name}.*-*"):
        if stale.is_dir() and (".tmp-" in stale.name or ".trash-" in stale.name):
            shutil.rmtree(stale, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in blocks (not mapped: hashing does not grow the process's resident memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()
