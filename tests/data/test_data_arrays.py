"""IDX folders, CIFAR python batches and .npz/.npy arrays, read with the right pixels and labels."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest

from ddpmkit.data import load_dataset

RNG = np.random.default_rng(0)


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file holding `array`."""
    header = (0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder, prefix, images, labels=None, gz=False):
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    pack = gzip.compress if gz else (lambda b: b)
    (folder / f"{prefix}-images-idx3-ubyte{ext}").write_bytes(pack(idx_bytes(images)))
    if labels is not None:
        (folder / f"{prefix}-labels-idx1-ubyte{ext}").write_bytes(pack(idx_bytes(labels)))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_splits(tmp_path, gz):
    train, test = RNG.integers(0, 256, (5, 6, 6), np.uint8), RNG.integers(0, 256, (3, 6, 6), np.uint8)
    write_idx(tmp_path, "train", train, np.arange(5, dtype=np.uint8), gz)
    write_idx(tmp_path, "t10k", test, np.array([7, 8, 9], np.uint8), gz)
    ds = load_dataset(str(tmp_path))
    np.testing.assert_array_equal(ds.images[..., 0], train)
    assert ds.labels.tolist() == [0, 1, 2, 3, 4] and ds.labels.dtype == np.int64
    assert load_dataset(str(tmp_path), split="test").labels.tolist() == [7, 8, 9]
    both = load_dataset(str(tmp_path), split="all")
    np.testing.assert_array_equal(both.images[..., 0], np.concatenate([train, test]))


def test_idx_without_labels_and_given_as_a_file(tmp_path):
    images = RNG.integers(0, 256, (4, 5, 5), np.uint8)
    write_idx(tmp_path, "train", images)
    file_ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte"), image_size=10, channels=3)
    assert file_ds.labels is None and file_ds.images.shape == (4, 10, 10, 3)
    assert load_dataset(str(tmp_path)).labels is None


def cifar_batch(n, labels_key="labels", keys_as_bytes=True):
    data = RNG.integers(0, 256, (n, 3072), np.uint8)
    batch = {"data": data, labels_key: list(range(n)), "batch_label": "fake"}
    return {k.encode(): v for k, v in batch.items()} if keys_as_bytes else batch


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_folder_chw_to_hwc(tmp_path, protocol):
    batches = {f"data_batch_{i}": cifar_batch(2) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(3, keys_as_bytes=False)
    for name, batch in batches.items():
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    ds = load_dataset(str(tmp_path))
    assert ds.images.shape == (10, 32, 32, 3) and ds.labels.tolist() == [0, 1] * 5
    row = batches["data_batch_1"][b"data"][1]
    # pixel (y=4, x=7) of image 1: R, G, B planes at offsets 0, 1024, 2048
    assert ds.images[1, 4, 7].tolist() == [row[4 * 32 + 7], row[1024 + 4 * 32 + 7], row[2048 + 4 * 32 + 7]]
    assert len(load_dataset(str(tmp_path), split="test")) == 3
    assert len(load_dataset(str(tmp_path), split="all")) == 13


def test_cifar100_release_subfolder(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 2)):
        (folder / name).write_bytes(pickle.dumps(cifar_batch(n, "fine_labels"), protocol=2))
    ds = load_dataset(str(tmp_path), channels=1, image_size=16)
    assert ds.images.shape == (4, 16, 16, 1) and ds.labels.tolist() == [0, 1, 2, 3]


def test_npz_keys_labels_and_splits(tmp_path):
    x_train, x_test = RNG.integers(0, 256, (4, 6, 6, 3), np.uint8), RNG.integers(0, 256, (2, 6, 6), np.uint8)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(4), x_test=x_test, y_test=np.array([5, 6]))
    ds = load_dataset(str(path))
    np.testing.assert_array_equal(ds.images, x_train)
    assert ds.labels.tolist() == [0, 1, 2, 3]
    test = load_dataset(str(path), split="test")
    np.testing.assert_array_equal(test.images[..., 0], x_test)
    assert test.labels.tolist() == [5, 6]
    both = load_dataset(str(path), split="all", channels=1)
    assert both.images.shape == (6, 6, 6, 1) and both.labels.tolist() == [0, 1, 2, 3, 5, 6]


def test_npz_first_array_rgba_and_npy(tmp_path):
    rgba = RNG.integers(0, 256, (2, 4, 4, 4), np.uint8)
    np.savez(tmp_path / "a.npz", rgba, labels=np.array([3, 4], np.int32))  # stored as arr_0
    ds = load_dataset(str(tmp_path / "a.npz"))
    a = rgba[..., 3:].astype(float) / 255
    expected = np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)  # composited on white
    np.testing.assert_array_equal(ds.images, expected)
    assert ds.labels.tolist() == [3, 4]
    np.savez(tmp_path / "b.npz", y=np.arange(2), pics=rgba[..., :1])  # no known key: first non-label array
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "b.npz")).images, rgba[..., :1])
    np.save(tmp_path / "c.npy", rgba[..., 0])
    ds = load_dataset(str(tmp_path / "c.npy"))
    np.testing.assert_array_equal(ds.images[..., 0], rgba[..., 0])
    assert ds.labels is None


def python2_cifar_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the real CIFAR files were: Python 2 str opcodes, numpy 1 module names."""

    def s(text: bytes) -> bytes:  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(text)]) + text

    def i(n: int) -> bytes:  # BININT
        return b"J" + int(n).to_bytes(4, "little", signed=True)

    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + i(0) + b"\x85" + s(b"b") + b"\x87R"
             + b"(" + i(1) + i(data.shape[0]) + i(data.shape[1]) + b"\x86"
             + b"cnumpy\ndtype\n" + s(b"u1") + i(0) + i(1) + b"\x87R"
             + b"(" + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + b"tb"
             + b"\x89" + b"T" + len(data.tobytes()).to_bytes(4, "little") + data.tobytes() + b"tb")
    label_list = b"]" + b"(" + b"".join(i(n) for n in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def test_cifar_pickle_from_python2_and_numpy1(tmp_path):
    data = RNG.integers(0, 256, (2, 3072), np.uint8)
    (tmp_path / "test_batch").write_bytes(python2_cifar_pickle(data, [4, 2]))
    assert pickle.loads(python2_cifar_pickle(data, [4, 2]), encoding="bytes")[b"labels"] == [4, 2]  # sanity
    ds = load_dataset(str(tmp_path), split="test")
    np.testing.assert_array_equal(ds.images, data.reshape(2, 3, 32, 32).transpose(0, 2, 3, 1))
    assert ds.labels.tolist() == [4, 2]
