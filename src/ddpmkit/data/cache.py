"""The decoded-image cache: a folder of images is decoded once into a memory-mapped uint8 file that later runs map.

Which sources: folders of image files (and their train/test splits), where decoding, resizing and cropping cost
minutes to hours and the decoded data can outgrow memory (CelebA-HQ 256: 5.9 GB, LSUN Church 256: 24.8 GB). The
array sources do not go through it: the built-in digits (1,797 images), IDX / Fashion-MNIST (47 MB), CIFAR (150 MB)
and .npz/.npy files are read as arrays in about a second and fit in memory many times over; caching them would add a
second copy on disk and buy nothing. (A huge uncompressed .npy could be memory-mapped by numpy itself.)

Key: one entry per source and split, `images-<first 20 hex of SHA-256(resolved folder path, split)>/` under the
cache folder (`$DDPMKIT_CACHE`, else ~/.cache/ddpmkit, as the FID statistics; or `--cache DIR`). Everything else the
pixels depend on is in the entry's manifest and checked on every open: the format version, the settings
(image_size, channels, and skip_bad when files were skipped), and each file's relative path, size and mtime_ns.
Any difference rebuilds the entry, and the log says why ("2 file(s) added ('a.png', 'b.png')", "--image-size 32 ->
16"). An images file whose size is not N*H*W*C, or whose SHA-256 is not the manifest's, is refused and rebuilt,
never read; a manifest from a newer format version is a one-line error (the entry is left as it is).

Building (cache_build.py) happens under an exclusive lock on `.images-<key>.lock`, so two runs never build the same
entry at once; the second finds the first's entry valid and maps it. Under torchrun one rank (`builder_rank`, 0)
builds; the others wait until the entry is valid (checked in full, the same way), or the builder reports failure,
or `$DDPMKIT_CACHE_TIMEOUT` seconds (default 6 h) pass; either of the last two is an error naming the builder's rank.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddpmkit.data.cache_build import (FORMAT, FORMAT_VERSION, IMAGES, LABELS, MANIFEST, Source, remove_leftovers,
                                      sha256_file, write_entry)
from ddpmkit.data.common import one_line, show
from ddpmkit.data.dataset import ImageDataset
from ddpmkit.data.folder import class_subfolder_labels, list_files, split_folders
from ddpmkit.errors import DataError, UserError
from ddpmkit.fileio import default_cache_dir

log = logging.getLogger(__name__)

TIMEOUT_ENV = "DDPMKIT_CACHE_TIMEOUT"
DEFAULT_TIMEOUT_S = 6 * 3600.0
POLL_S = 0.5
FLAGS = {"image_size": "--image-size", "channels": "--channels", "skip_bad": "--skip-bad"}


@dataclass
class ImageCache:
    """Where the cache lives and this process's part in building it (see the module docstring)."""

    root: Path
    rank: int = 0
    builder_rank: int = 0
    token: str | None = None  # the same on every rank of one job: names the builder's failure note
    timeout_s: float | None = None  # None: $DDPMKIT_CACHE_TIMEOUT, else 6 h
    workers: int | None = None  # decoding processes; None: the CPUs this process may use
    progress: bool = True

    @property
    def builds(self) -> bool:
        return self.rank == self.builder_rank

    def failure_note(self, entry: Path) -> Path | None:
        return entry.with_name(f".{entry.name}.failed-{self.token}") if self.token else None

    def wait_limit(self) -> float:
        if self.timeout_s is not None:
            return float(self.timeout_s)
        try:
            return float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S))
        except ValueError:
            raise DataError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r}: expected seconds, e.g. 3600") from None


def as_image_cache(cache) -> ImageCache | None:
    """None/False: no cache; True: the default folder; a path: that folder; an ImageCache as it is."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, ImageCache):
        return cache
    return ImageCache(default_cache_dir() if cache is True else Path(cache).expanduser())


def entry_path(root: Path, source_root: Path, split: str) -> Path:
    """The entry of one source folder and split: images-<key> (the key is in the module docstring)."""
    key = hashlib.sha256(f"{source_root.resolve()}\0{split}".encode("utf-8", "surrogateescape")).hexdigest()
    return Path(root) / f"images-{key[:20]}"


def scan_source(root: Path, split: str, settings: dict) -> Source:
    """The source's files in load order with their size and mtime: what a manifest is compared with."""
    files, listing_skipped = list_files(root, split, settings["skip_bad"])
    stats = []
    for path in files:
        try:
            st = path.stat()
        except OSError:  # a broken link or a file that vanished: decoding names it (or skips it)
            stats.append((-1, -1))
            continue
        stats.append((st.st_size, st.st_mtime_ns))
    return Source(root, split, files, stats, listing_skipped, settings)


def folder_labels(root: Path, split: str, files: list[Path]) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels of a folder's kept files and the class names, by folder.py's rule (class subfolders, see its
    docstring), or (None, None). The one place the folder label rule reaches the cache: the entry stores the labels
    as labels.npy; the names come from the subfolders' names, listed again on every open."""
    labels, names = class_subfolder_labels(split_folders(root, split), files)
    return (None, None) if labels is None else (np.asarray(labels, dtype=np.int64), names)


# --- reading an entry --------------------------------------------------------------------------------------------


def _describe(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return f"{shown}{', ...' if len(names) > 3 else ''}"


def source_changes(manifest: dict, source: Source) -> str:
    """Why `manifest` does not describe `source` ('' if it does): settings, then files added, removed, modified."""
    reasons, old = [], manifest["settings"]
    for key, flag in FLAGS.items():
        if key == "skip_bad" and not manifest["skipped"]:
            continue  # nothing was skipped: the pixels are the same with or without --skip-bad
        if old.get(key) != source.settings[key]:
            reasons.append(f"{flag} {old.get(key)} -> {source.settings[key]}")
    before = {rel: (size, mtime) for rel, size, mtime in manifest["files"]}
    now = {rel: (size, mtime) for rel, size, mtime in source.listing()}
    for what, names in (("added", sorted(now.keys() - before.keys())), ("removed", sorted(before.keys() - now.keys())),
                        ("modified", sorted(k for k in now.keys() & before.keys() if now[k] != before[k]))):
        if names:
            reasons.append(f"{len(names)} file(s) {what} ({_describe(names)})")
    if [rel for rel, _, _ in manifest["files"]] != [rel for rel, _, _ in source.listing()] and not reasons:
        reasons.append("the files' order changed")
    return "; ".join(reasons)


def _read_manifest(entry: Path) -> tuple[dict | None, str]:
    """The entry's manifest, or (None, why it cannot be used). A newer format version is a DataError."""
    if not entry.is_dir():
        return None, "no cache yet"
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return None, f"its manifest is unreadable ({one_line(err)})"
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return None, "its manifest is not a ddpmkit image cache manifest"
    version = manifest.get("version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise DataError(f"image cache {show(entry)}: format version {version} is newer than this ddpmkit's "
                        f"{FORMAT_VERSION}: upgrade ddpmkit, or pass --cache DIR with another folder, or --no-cache")
    if version != FORMAT_VERSION:
        return None, f"its format version {version!r} is not {FORMAT_VERSION}"
    return manifest, ""


def open_entry(entry: Path, source: Source, name: str, *, verify: bool = True) -> tuple[ImageDataset | None, str]:
    """The entry as an ImageDataset (images an np.memmap), or (None, why not). verify: check the SHA-256 too."""
    manifest, reason = _read_manifest(entry)
    if manifest is None:
        return None, reason
    try:
        reason = source_changes(manifest, source)
        if reason:
            return None, reason
        shape = tuple(int(n) for n in manifest["shape"])
        expected = int(np.prod(shape))
        have = (entry / IMAGES).stat().st_size
        if have != expected or manifest["images_bytes"] != expected:
            return None, f"{IMAGES} is truncated or padded ({have} bytes, the manifest says {expected})"
        if verify and sha256_file(entry / IMAGES) != manifest["images_sha256"]:
            return None, f"{IMAGES} does not match its manifest (SHA-256 differs: tampered or corrupt)"
        labels = _open_labels(entry, manifest, shape[0], verify)
    except (OSError, KeyError, TypeError, ValueError) as err:
        return None, f"the entry is incomplete or malformed ({type(err).__name__}: {one_line(err)})"
    if isinstance(labels, str):
        return None, labels
    images = np.memmap(entry / IMAGES, dtype=np.uint8, mode="r", shape=shape)
    skipped = [str(s) for s in manifest["skipped"]]
    return ImageDataset(images, labels, name, len(skipped), skipped), ""


def _open_labels(entry: Path, manifest: dict, n: int, verify: bool) -> np.ndarray | None | str:
    """labels.npy as int64 (n,), None if the data set has none, or a string saying what is wrong with it."""
    if not manifest["labels"]:
        return None
    if verify and sha256_file(entry / LABELS) != manifest["labels_sha256"]:
        return f"{LABELS} does not match its manifest (SHA-256 differs)"
    labels = np.load(entry / LABELS, allow_pickle=False)
    if labels.dtype != np.int64 or labels.shape != (n,):
        return f"{LABELS} holds {labels.dtype} {labels.shape}, not int64 ({n},)"
    return labels


# --- loading through the cache -----------------------------------------------------------------------------------


def load_folder_cached(root: Path, name: str, *, image_size: int | None, channels: int | None, split: str,
                       skip_bad: bool, cache: ImageCache) -> ImageDataset:
    """`folder.load_folder`, through the cache: map a valid entry, else build it (or wait for the builder rank)."""
    settings = {"image_size": image_size, "channels": channels, "skip_bad": bool(skip_bad)}
    source = scan_source(root, split, settings)
    entry = entry_path(cache.root, root, split)
    if not cache.builds:
        return _with_class_names(_wait_for_builder(entry, source, name, cache), source)
    try:
        return _with_class_names(_open_or_build(entry, source, name, cache), source)
    except BaseException as err:
        _note_failure(entry, cache, err)
        raise


def _with_class_names(ds: ImageDataset, source: Source) -> ImageDataset:
    """The class names of a labelled folder (its sorted class subfolders), as the in-memory path gives them."""
    if ds.labels is not None:
        ds.class_names = folder_labels(source.root, source.split, source.files)[1]
    return ds


def _open_or_build(entry: Path, source: Source, name: str, cache: ImageCache) -> ImageDataset:
    ds, reason = open_entry(entry, source, name)
    if ds is None:
        with _locked(entry):
            ds, reason = open_entry(entry, source, name)  # another run may have built it while we waited
            if ds is None:
                log.warning("data: building the image cache %s: %s", entry, reason)
                remove_leftovers(entry)
                workers = cache.workers or len(os.sched_getaffinity(0))
                try:
                    write_entry(entry, source, name, workers=workers, progress=cache.progress,
                                labels_of=lambda kept: folder_labels(source.root, source.split, kept)[0])
                except OSError as err:
                    raise _write_error(entry, err) from None
                ds, reason = open_entry(entry, source, name, verify=False)  # hashed while it was written
                if ds is None:
                    raise RuntimeError(f"image cache {entry}: just built but not readable: {reason}")
    if ds.num_skipped:
        log.warning("data: skipped %d bad file(s) of %d in %s (listed in %s)", ds.num_skipped,
                    len(source.files), show(name), entry / MANIFEST)
    return ds


@contextmanager
def _locked(entry: Path):
    """Hold the exclusive lock of `entry` (released by the kernel if this process dies)."""
    lock = entry.with_name(f".{entry.name}.lock")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise _write_error(entry.parent, err) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _write_error(where: Path, err: OSError) -> DataError:
    full = " (the disk is full)" if err.errno == 28 else ""
    return DataError(f"image cache {show(where)}: cannot write there ({err.strerror or err}){full}: pass --cache "
                     f"DIR with a writable folder that has room, or --no-cache")


def _note_failure(entry: Path, cache: ImageCache, err: BaseException) -> None:
    """Tell the waiting ranks that the builder failed (best effort: they time out otherwise)."""
    note = cache.failure_note(entry)
    if note is None:
        return
    text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {one_line(err)}"
    try:
        note.write_text(text)
    except OSError:
        pass


def _wait_for_builder(entry: Path, source: Source, name: str, cache: ImageCache) -> ImageDataset:
    """Poll until the entry is valid for `source` (verified in full), the builder failed, or the time is up."""
    start, limit, seen = time.monotonic(), cache.wait_limit(), None
    who = f"rank {cache.builder_rank}"
    while True:
        note = cache.failure_note(entry)
        if note is not None and note.exists():
            raise DataError(f"rank {cache.rank}: {who} could not build the image cache {show(entry)}: "
                            f"{one_line(note.read_text()).removeprefix('data: ')}")
        state = _entry_state(entry)
        if state is not None and state != seen:  # verify each version of the entry once
            ds, _ = open_entry(entry, source, name)
            if ds is not None:
                return ds
            seen = state
        if time.monotonic() - start > limit:
            raise DataError(f"rank {cache.rank}: waited {limit:.0f} s for {who} to build the image cache "
                            f"{show(entry)}; {who} failed or is still building (see its log; set {TIMEOUT_ENV} to "
                            f"wait longer)")
        time.sleep(POLL_S)


def _entry_state(entry: Path) -> tuple | None:
    """(inode, mtime_ns, size) of the entry's files: changes whenever a build replaces the entry."""
    try:
        return tuple((st.st_ino, st.st_mtime_ns, st.st_size)
                     for st in ((entry / MANIFEST).stat(), (entry / IMAGES).stat()))
    except OSError:
        return None


def release(entry_root: Path, cache: ImageCache) -> None:
    """Remove this job's failure notes (the builder calls it once every rank has its data)."""
    if cache.token and cache.builds:
        for note in Path(entry_root).glob(f".images-*.failed-{cache.token}"):
            note.unlink(missing_ok=True)
