"""Folders of image files: every Pillow mode, EXIF orientation, sizes, channels, splits and file discovery."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest
from PIL import Image

from ddpmkit.data import load_dataset

GREY = np.array([[0, 64], [128, 255]], np.uint8)
RGB = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [10, 20, 30]]], np.uint8)
ALPHA = np.array([[255, 0], [128, 255]], np.uint8)


def white_blend(color, alpha):
    """Reference blend over white, in float, rounded."""
    a = alpha.astype(float)[..., None] / 255
    return np.rint(color.astype(float) * a + 255 * (1 - a)).astype(np.uint8)


def mode_1():
    return Image.fromarray(GREY > 100), np.array([[0, 0], [255, 255]], np.uint8)[..., None]


def palette_image() -> Image.Image:
    """RGB as a 4-colour palette image: index i holds the i-th pixel's colour."""
    img = Image.new("P", (2, 2))
    img.putpalette(RGB.reshape(-1).tolist() + [0] * (768 - 12))
    img.putdata([0, 1, 2, 3])
    return img


def mode_p():
    return palette_image(), RGB


def mode_p_transparent():
    img = palette_image()
    img.info["transparency"] = 1  # index 1 (green) is transparent -> white
    return img, np.array([[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [10, 20, 30]]], np.uint8)


def mode_rgba():
    return Image.fromarray(np.dstack([RGB, ALPHA])), white_blend(RGB, ALPHA)


def mode_la():
    img = Image.merge("LA", [Image.fromarray(GREY), Image.fromarray(ALPHA)])
    return img, white_blend(GREY[..., None], ALPHA)


def mode_i16():
    levels = np.array([[0, 257], [32896, 65535]], np.uint16)  # scaled by 1/257, not clipped at 255
    return Image.fromarray(levels), np.array([[0, 1], [128, 255]], np.uint8)[..., None]


def mode_i32():
    levels = np.array([[0, 257], [32896, 65535]], np.int32)
    return Image.fromarray(levels), np.array([[0, 1], [128, 255]], np.uint8)[..., None]


def mode_f():
    values = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    return Image.fromarray(values), np.array([[0, 64], [128, 255]], np.uint8)[..., None]


def mode_cmyk():
    cmyk = np.zeros((2, 2, 4), np.uint8)
    cmyk[0, 0, 0] = 255  # full cyan -> (0, 255, 255)
    cmyk[0, 1, 3] = 255  # full black
    cmyk[1, 0, 1:3] = 255  # magenta + yellow -> red
    expected = np.array([[[0, 255, 255], [0, 0, 0]], [[255, 0, 0], [255, 255, 255]]], np.uint8)
    return Image.fromarray(cmyk, "CMYK"), expected


MODES = {  # mode -> (builder, file extension that stores it losslessly)
    "1": (mode_1, "png"),
    "L": (lambda: (Image.fromarray(GREY), GREY[..., None]), "png"),
    "P": (mode_p, "png"),
    "P+transparency": (mode_p_transparent, "png"),
    "RGB": (lambda: (Image.fromarray(RGB), RGB), "png"),
    "RGBA": (mode_rgba, "png"),
    "LA": (mode_la, "png"),
    "I;16": (mode_i16, "png"),
    "I": (mode_i32, "tiff"),
    "F": (mode_f, "tiff"),
    "CMYK": (mode_cmyk, "tiff"),
    "RGB-bmp": (lambda: (Image.fromarray(RGB), RGB), "bmp"),
    "RGB-webp-lossless": (lambda: (Image.fromarray(RGB), RGB), "webp"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_loads_with_the_right_pixels(mode, tmp_path, record_property):
    record_property("bad_inputs", 1)
    builder, ext = MODES[mode]
    img, expected = builder()
    kwargs = {"lossless": True} if ext == "webp" else {}
    img.save(tmp_path / f"x.{ext.upper() if mode == 'L' else ext}", **kwargs)  # extension case is ignored
    ds = load_dataset(str(tmp_path))
    assert ds.images.dtype == np.uint8 and ds.labels is None and ds.name == str(tmp_path)
    np.testing.assert_array_equal(ds.images[0], expected)
    record_property("bad_inputs_answered", 1)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path, save_image, record_property):
    record_property("bad_inputs", 1)
    save_image(tmp_path / "deep.png", np.full((2, 2), 65535, np.uint16))
    save_image(tmp_path / "mid.png", np.full((2, 2), 32896, np.uint16))
    ds = load_dataset(str(tmp_path))
    assert ds.images[:, 0, 0, 0].tolist() == [255, 128]
    record_property("bad_inputs_answered", 1)


def oriented(upright: np.ndarray, orientation: int) -> np.ndarray:
    """What a camera stores for `orientation`, per the EXIF spec (display transform inverted)."""
    stored = {1: upright, 2: np.fliplr(upright), 3: np.rot90(upright, 2), 4: np.flipud(upright), 5: upright.T,
              6: np.rot90(upright, 1), 7: np.rot90(upright, 2).T, 8: np.rot90(upright, -1)}[orientation]
    return np.ascontiguousarray(stored)


def test_all_eight_exif_orientations_give_the_same_upright_pixels(tmp_path, save_image, record_property):
    record_property("bad_inputs", 8)
    upright = np.arange(9, dtype=np.uint8).reshape(3, 3) * 25
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save_image(tmp_path / f"o{orientation}.png", oriented(upright, orientation), exif=exif.tobytes())
    ds = load_dataset(str(tmp_path))
    for i in range(8):
        np.testing.assert_array_equal(ds.images[i, ..., 0], upright, err_msg=f"orientation {i + 1}")
    record_property("bad_inputs_answered", 8)


def test_broken_exif_loads_unrotated(tmp_path, save_image, rgb8, monkeypatch, record_property):
    record_property("bad_inputs", 3)  # garbage EXIF in a PNG and a JPEG, and an EXIF parser that raises
    save_image(tmp_path / "garbage.png", rgb8, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff junk")
    save_image(tmp_path / "garbage.jpg", rgb8, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x09\x00\x12\x01",
               quality=100, subsampling=0)
    ds = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(ds.images[1], rgb8)  # sorted: garbage.jpg, garbage.png
    assert np.abs(ds.images[0].astype(int) - rgb8).max() < 40  # JPEG is lossy
    # and when the EXIF parser itself raises, the image is still read unrotated
    monkeypatch.setattr(Image.Image, "getexif", lambda self: (_ for _ in ()).throw(SyntaxError("bad IFD")))
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "garbage.png")).images[0], rgb8)
    record_property("bad_inputs_answered", 3)


def test_resize_and_centre_crop(tmp_path, save_image):
    wide = np.zeros((4, 8), np.uint8)
    wide[:, 2:6] = 200  # a centred bright square: cropping to the centre keeps only it
    save_image(tmp_path / "wide.png", wide)
    save_image(tmp_path / "square.png", np.full((8, 8), 77, np.uint8))
    ds = load_dataset(str(tmp_path), image_size=4)
    assert ds.images.shape == (2, 4, 4, 1)
    assert (ds.images[0] == 77).all()  # sorted: square.png, wide.png
    assert (ds.images[1] == 200).all()


def test_channels_follow_the_majority_and_convert(tmp_path, save_image):
    save_image(tmp_path / "a.png", GREY)
    save_image(tmp_path / "b.png", GREY)
    save_image(tmp_path / "c.png", RGB)
    ds = load_dataset(str(tmp_path))
    assert ds.channels == 1
    luma = np.rint(RGB.astype(float) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    np.testing.assert_array_equal(ds.images[2, ..., 0], luma)
    rgb = load_dataset(str(tmp_path), channels=3)
    np.testing.assert_array_equal(rgb.images[0], np.repeat(GREY[..., None], 3, axis=2))
    np.testing.assert_array_equal(rgb.images[2], RGB)


def test_recursive_sorted_discovery_skips_hidden_and_other_files(tmp_path, save_image):
    for name, level in [("b/2.PNG", 2), ("a/1.jpeg", 1), ("0.bmp", 0), (".hidden/9.png", 9), ("._5.png", 5)]:
        save_image(tmp_path / name, np.full((4, 4), level * 20, np.uint8), **({"quality": 100}
                                                                            if "jpeg" in name else {}))
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(str(tmp_path))
    assert ds.images[:, 0, 0, 0].tolist() == [0, 20, 40]  # 0.bmp, a/1.jpeg, b/2.PNG


def test_symlink_loop_does_not_hang(tmp_path, save_image):
    save_image(tmp_path / "sub/x.png", GREY)
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    assert len(load_dataset(str(tmp_path))) == 1


def test_train_test_subfolders_are_splits(tmp_path, save_image):
    save_image(tmp_path / "train/a.png", np.full((2, 2), 1, np.uint8))
    save_image(tmp_path / "train/b.png", np.full((2, 2), 2, np.uint8))
    save_image(tmp_path / "test/c.png", np.full((2, 2), 3, np.uint8))
    counts = {split: len(load_dataset(str(tmp_path), split=split)) for split in ("train", "test", "all")}
    assert counts == {"train": 2, "test": 1, "all": 3}


def test_skip_bad_counts_logs_and_keeps_good(tmp_path, save_image, caplog):
    save_image(tmp_path / "good1.png", GREY)
    save_image(tmp_path / "good2.png", GREY)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good1.png").read_bytes()[:40])
    os.symlink(tmp_path / "gone.png", tmp_path / "link.png")
    with caplog.at_level(logging.WARNING, logger="ddpmkit.data"):
        ds = load_dataset(str(tmp_path), skip_bad=True)
    assert len(ds) == 2 and ds.num_skipped == 3 and len(ds.skipped) == 3
    for name, reason in zip(["cut.png", "link.png", "text.png"], ds.skipped):
        assert name in reason and "\n" not in reason
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4 and "skipped 3 bad file(s) of 5" in messages[-1]
    assert all("\n" not in m for m in messages)
