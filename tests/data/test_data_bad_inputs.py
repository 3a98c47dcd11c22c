"""The bad-input corpus: every case is a one-line DataError that names the offending path (or the fix).

Each case builds its input in tmp_path and returns (spec, load options, text the message must hold).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image

from ddpmkit.cli import main
from ddpmkit.data import load_dataset

PATTERN = (np.arange(8 * 8 * 3).reshape(8, 8, 3) * 5 % 256).astype(np.uint8)


def png_bytes(pixels=PATTERN, fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def in_folder(tmp_path, name: str, content: bytes, good: bool = True):
    """A folder with one good image and the file `name` holding `content`."""
    if good:
        (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / name).write_bytes(content)
    return str(tmp_path), {}, name


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    header = (magic or 0x0800 + array.ndim).to_bytes(4, "big")
    return header + b"".join(int(n).to_bytes(4, "big") for n in array.shape) + array.astype(np.uint8).tobytes()


IMAGES = np.zeros((3, 4, 4), np.uint8)
IMAGES_FILE = "train-images-idx3-ubyte"


def idx_case(tmp_path, content: bytes, name: str = IMAGES_FILE, labels: bytes | None = None):
    (tmp_path / name).write_bytes(content)
    if labels is not None:
        (tmp_path / "train-labels-idx1-ubyte").write_bytes(labels)
    return str(tmp_path), {}, name if labels is None else "train-labels-idx1-ubyte"


def cifar_case(tmp_path, batch, raw: bytes | None = None):
    (tmp_path / "test_batch").write_bytes(raw if raw is not None else pickle.dumps(batch, protocol=2))
    return str(tmp_path), {"split": "test"}, "test_batch"


def good_cifar(n=2):
    return {b"data": np.zeros((n, 3072), np.uint8), b"labels": list(range(n))}


class MarkerPayload:
    """Unpickling this would run exec(...) and create a marker file, if the unpickler allowed it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


class SystemPayload(MarkerPayload):
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def npz_case(tmp_path, name="bad.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name), {}, name


def bomb(tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)  # 8x8 = 64 pixels: above `limit`
    return in_folder(tmp_path, "huge.png", png_bytes(), good=False)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb needs no more."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def unreadable(tmp_path, monkeypatch):
    """chmod 000, or (as root, who reads anyway) Pillow's open failing the way the OS would."""
    spec = in_folder(tmp_path, "locked.png", png_bytes())
    target = tmp_path / "locked.png"
    if os.geteuid() == 0:
        real_open = Image.open

        def deny(fp, *args, **kwargs):
            if os.fspath(fp) == os.fspath(target):
                raise PermissionError(13, "Permission denied", os.fspath(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", deny)
    else:
        target.chmod(0)
    return spec


def unlistable_folder(tmp_path, monkeypatch):
    (tmp_path / "good.png").write_bytes(png_bytes())
    (tmp_path / "secret").mkdir()
    real_scandir = os.scandir

    def deny(path="."):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith("secret"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", deny)
    return str(tmp_path), {}, "secret"


def mixed_sizes(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(png_bytes())
    (tmp_path / "b.png").write_bytes(png_bytes(PATTERN[:4, :4]))
    return str(tmp_path), {}, "b.png"


def non_square(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(png_bytes(PATTERN[:4]))
    return str(tmp_path), {}, "--image-size"


def fifo(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.png")  # open() on a FIFO would block forever
    return str(tmp_path), {}, "pipe.png"


def broken_symlink(tmp_path, monkeypatch):
    (tmp_path / "good.png").write_bytes(png_bytes())
    os.symlink(tmp_path / "missing.png", tmp_path / "dangling.png")
    return str(tmp_path), {}, "dangling.png"


def tiff_case(tmp_path, pixels, name):
    Image.fromarray(pixels).save(tmp_path / name)
    return str(tmp_path), {}, name


def truncated_gz(tmp_path, monkeypatch):
    packed = gzip.compress(idx_bytes(IMAGES))
    return idx_case(tmp_path, packed[: len(packed) // 2], IMAGES_FILE + ".gz")


def cifar_missing_batch(tmp_path, monkeypatch):
    for i in (1, 2, 4, 5):
        (tmp_path / f"data_batch_{i}").write_bytes(pickle.dumps(good_cifar(), protocol=2))
    return str(tmp_path), {}, "data_batch_3"


def truncated_npy(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "cut.npy").write_bytes(buffer.getvalue()[:150])
    return str(tmp_path / "cut.npy"), {}, "cut.npy"


def pickled_npy(tmp_path, monkeypatch):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    return str(tmp_path / "objects.npy"), {}, "objects.npy"


def corrupt_zip(tmp_path, monkeypatch):
    with zipfile.ZipFile(tmp_path / "broken.npz", "w") as zf:
        zf.writestr("images.npy", b"\x93NUMPY garbage")
    return str(tmp_path / "broken.npz"), {}, "broken.npz"


C = {  # case name -> builder(tmp_path, monkeypatch) -> (spec, options, text in message)
    # image folders
    "truncated PNG": lambda t, m: in_folder(t, "cut.png", png_bytes()[:60]),
    "truncated JPEG": lambda t, m: in_folder(t, "cut.jpg", png_bytes(fmt="JPEG")[:300]),
    "random bytes .png": lambda t, m: in_folder(t, "noise.png", np.random.default_rng(1).bytes(500)),
    "PNG header then garbage": lambda t, m: in_folder(t, "hdr.png", png_bytes()[:33] + b"\x00" * 200),
    "text file named .png": lambda t, m: in_folder(t, "readme.png", b"this is not a picture\n"),
    "text file named .JPG": lambda t, m: in_folder(t, "notes.JPG", b"hello"),
    "empty .webp": lambda t, m: in_folder(t, "empty.webp", b""),
    "newline in file name": lambda t, m: (*in_folder(t, "bad\nname.png", b"text")[:2], "bad\\nname.png"),
    "unreadable file": unreadable,
    "unlistable subfolder": unlistable_folder,
    "broken symlink": broken_symlink,
    "FIFO named .png": fifo,
    "decompression bomb (warning level)": lambda t, m: bomb(t, m, 50),
    "decompression bomb (error level)": lambda t, m: bomb(t, m, 20),
    "decompression bomb (header claims 40000 x 40000)": lambda t, m: in_folder(t, "bomb.png",
                                                                             png_claiming(40000, 40000)),
    "mixed sizes without --image-size": mixed_sizes,
    "non-square without --image-size": non_square,
    "float image outside [0, 1]": lambda t, m: tiff_case(t, np.full((2, 2), 200.0, np.float32), "f255.tiff"),
    "float image with NaN": lambda t, m: tiff_case(t, np.full((2, 2), np.nan, np.float32), "nan.tiff"),
    "32-bit image with negative values": lambda t, m: tiff_case(t, np.full((2, 2), -5, np.int32), "neg.tif"),
    "empty folder": lambda t, m: (str(t), {}, "no images found"),
    "folder of non-images": lambda t, m: ((t / "a.txt").write_text("x"), str(t), {}, "no images found")[1:],
    "test split of a plain folder": lambda t, m: (*in_folder(t, "x.png", png_bytes())[:1], {"split": "test"},
                                                  "no test split"),
    # IDX
    "IDX wrong magic": lambda t, m: idx_case(t, b"\x12\x34\x56\x78" + b"\x00" * 60),
    "IDX labels file given as images": lambda t, m: idx_case(t, idx_bytes(np.arange(3))),
    "IDX truncated data": lambda t, m: idx_case(t, idx_bytes(IMAGES)[:-5]),
    "IDX truncated header": lambda t, m: idx_case(t, idx_bytes(IMAGES)[:9]),
    "IDX trailing bytes": lambda t, m: idx_case(t, idx_bytes(IMAGES) + b"\x00"),
    "IDX header claims petabytes": lambda t, m: idx_case(t, b"\x00\x00\x08\x03" + b"\xff" * 12),
    "IDX float data type": lambda t, m: idx_case(t, idx_bytes(IMAGES, magic=0x0D03)),
    "IDX corrupt .gz": lambda t, m: idx_case(t, b"\x1f\x8bnot really gzip", IMAGES_FILE + ".gz"),
    "IDX truncated .gz": truncated_gz,
    "IDX labels count mismatch": lambda t, m: idx_case(t, idx_bytes(IMAGES), labels=idx_bytes(np.arange(2))),
    "IDX labels with images magic": lambda t, m: idx_case(t, idx_bytes(IMAGES), labels=idx_bytes(IMAGES)),
    # CIFAR
    "CIFAR pickle runs exec": lambda t, m: cifar_case(t, {b"data": MarkerPayload(t / "MARKER")}),
    "CIFAR pickle runs os.system": lambda t, m: cifar_case(t, {**good_cifar(), b"labels": SystemPayload(t / "MARKER")}),
    "CIFAR pickle calls another codec": lambda t, m: cifar_case(  # _codecs.encode("x", "no-such")
        t, None, b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x07\x00\x00\x00no-such\x86R."),
    "CIFAR pickle of a list": lambda t, m: cifar_case(t, [1, 2, 3]),
    "CIFAR batch without labels": lambda t, m: cifar_case(t, {b"data": np.zeros((2, 3072), np.uint8)}),
    "CIFAR data of the wrong shape": lambda t, m: cifar_case(t, {**good_cifar(),
                                                                  b"data": np.zeros((2, 100), np.uint8)}),
    "CIFAR labels count mismatch": lambda t, m: cifar_case(t, {**good_cifar(), b"labels": [1]}),
    "CIFAR truncated pickle": lambda t, m: cifar_case(t, None, pickle.dumps(good_cifar(), protocol=2)[:200]),
    "CIFAR missing batch file": cifar_missing_batch,
    # .npz / .npy
    "npz float32": lambda t, m: npz_case(t, images=np.random.default_rng(2).random((2, 4, 4), np.float32)),
    "npz NaN": lambda t, m: npz_case(t, images=np.full((2, 4, 4), np.nan)),
    "npz int64": lambda t, m: npz_case(t, images=np.zeros((2, 4, 4), np.int64)),
    "npz 1-D": lambda t, m: npz_case(t, images=np.zeros(16, np.uint8)),
    "npz 5-D": lambda t, m: npz_case(t, images=np.zeros((2, 4, 4, 3, 1), np.uint8)),
    "npz channels-first": lambda t, m: npz_case(t, images=np.zeros((2, 3, 8, 8), np.uint8)),
    "npz empty": lambda t, m: npz_case(t, images=np.zeros((0, 8, 8), np.uint8)),
    "npz only labels": lambda t, m: npz_case(t, labels=np.arange(3)),
    "npz labels wrong length": lambda t, m: npz_case(t, images=np.zeros((2, 4, 4), np.uint8), labels=np.arange(5)),
    "npz test split missing": lambda t, m: (*npz_case(t, x_train=np.zeros((2, 4, 4), np.uint8),
                                                      x_val=np.zeros((2, 4, 4), np.uint8))[:1],
                                            {"split": "test"}, "--split train"),
    "npz corrupt zip": corrupt_zip,
    "npz random bytes": lambda t, m: ((t / "noise.npz").write_bytes(b"PK\x03\x04junk"), str(t / "noise.npz"),
                                      {}, "noise.npz")[1:],
    "npy holding pickled objects": pickled_npy,
    "npy truncated": truncated_npy,
    # spec
    "missing path": lambda t, m: (str(t / "nothing-here"), {}, "no such file or folder"),
    "unknown file type": lambda t, m: ((t / "data.csv").write_text("1,2"), str(t / "data.csv"), {}, "data.csv")[1:],
}


PAYLOADS = ["CIFAR pickle runs exec", "CIFAR pickle runs os.system"]  # they would create MARKER if run


@pytest.mark.parametrize("case", list(C))
def test_bad_input_is_a_one_line_data_error(case, tmp_path, monkeypatch, data_error, record_property):
    record_property("bad_inputs", 1)
    record_property("payloads", int(case in PAYLOADS))
    spec, options, expected = C[case](tmp_path, monkeypatch)
    try:
        data_error(lambda: load_dataset(spec, **options), expected)
    finally:
        record_property("payloads_executed", int((tmp_path / "MARKER").exists()))
    assert not (tmp_path / "MARKER").exists()  # no pickle payload ever ran
    record_property("bad_inputs_answered", 1)


# `ddpm train` has no --split: the cases that need one are answered through load_dataset above only
CLI_CASES = [c for c in C if not (c.startswith("CIFAR") and c != "CIFAR missing batch file") and "split" not in c]


@pytest.mark.parametrize("case", CLI_CASES)
def test_bad_input_through_the_cli_is_one_line_and_exit_2(case, tmp_path, monkeypatch, capsys, record_property):
    record_property("bad_inputs", 1)
    spec, options, expected = C[case](tmp_path, monkeypatch)
    assert options == {}
    assert main(["train", "--out", str(tmp_path / "run"), "--data", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm train: error: data: ") and err.count("\n") == 1 and expected in err, err
    record_property("bad_inputs_answered", 1)


def test_fewer_images_than_one_batch_through_the_cli(tmp_path, capsys, record_property):
    record_property("bad_inputs", 1)
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes())
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(tmp_path), "--batch-size", "4",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3 images, fewer than one batch of 4" in err and str(tmp_path) in err, err
    record_property("bad_inputs_answered", 1)


def test_the_pickle_payloads_are_real(tmp_path):
    """Without the restricted unpickler, the payloads would have run: the tests above are not vacuous."""
    pickle.loads(pickle.dumps({b"data": MarkerPayload(tmp_path / "MARKER")}, protocol=2))
    assert (tmp_path / "MARKER").exists()


def test_many_cases():
    assert len(C) >= 30


SKIPPABLE = ["truncated PNG", "truncated JPEG", "random bytes .png", "text file named .png", "empty .webp",
             "unreadable file", "unlistable subfolder", "broken symlink", "FIFO named .png",
             "float image with NaN", "decompression bomb (warning level)"]


@pytest.mark.parametrize("case", SKIPPABLE)
def test_skip_bad_skips_and_counts(case, tmp_path, monkeypatch, record_property):
    record_property("bad_inputs", 1)
    (tmp_path / "keep.png").write_bytes(png_bytes(PATTERN[:4, :4]))  # small: under the bomb limit
    spec, options, expected = C[case](tmp_path, monkeypatch)
    ds = load_dataset(spec, skip_bad=True, image_size=4, **options)
    assert ds.num_skipped == 1 and expected in ds.skipped[0] and "\n" not in ds.skipped[0]
    assert len(ds) >= 1
    record_property("bad_inputs_answered", 1)
