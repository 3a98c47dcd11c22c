"""Labels and class names of every source, the input of class-conditional training (`ddpm train --conditional`)."""

import numpy as np

from ddpmkit.data import class_names_of, load_dataset


def test_digits_have_labels_and_names():
    ds = load_dataset("digits")
    assert ds.labels is not None and len(ds.labels) == len(ds) and ds.class_names == [str(i) for i in range(10)]


def test_class_subfolders_are_the_classes_in_sorted_order(tmp_path, save_image):
    for cls, n in (("zebra", 2), ("ant", 3), ("moth", 1)):
        for i in range(n):
            save_image(tmp_path / cls / ("deep" if i == 0 else "") / f"{i}.png", np.full((4, 4), 40 * i, np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / ".hidden").mkdir()
    ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["ant", "empty", "moth", "zebra"]  # ImageFolder's rule: sorted names
    assert sorted(ds.labels.tolist()) == [0, 0, 0, 2, 3, 3]  # the empty subfolder is a class with no images


def test_a_loose_image_means_no_class_layout(tmp_path, save_image):
    save_image(tmp_path / "a" / "x.png", np.zeros((4, 4), np.uint8))
    save_image(tmp_path / "loose.png", np.zeros((4, 4), np.uint8))
    ds = load_dataset(str(tmp_path))
    assert ds.labels is None and class_names_of(ds) == []


def test_train_test_folders_take_classes_from_their_subfolders(tmp_path, save_image):
    for split in ("train", "test"):
        for cls in ("b", "a"):
            save_image(tmp_path / split / cls / "0.png", np.zeros((4, 4), np.uint8))
    ds = load_dataset(str(tmp_path), split="all")
    assert ds.class_names == ["a", "b"] and ds.labels.tolist() == [0, 1, 0, 1]


def test_npz_with_only_arr_0_is_the_images_for_any_split(tmp_path):
    np.savez(tmp_path / "test_images.npz", np.zeros((3, 4, 4), np.uint8))
    for split in ("train", "test", "all"):
        assert len(load_dataset(str(tmp_path / "test_images.npz"), split=split)) == 3
    np.save(tmp_path / "one.npy", np.zeros((2, 4, 4), np.uint8))
    assert len(load_dataset(str(tmp_path / "one.npy"), split="test")) == 2


def test_npz_labels_rule(tmp_path):
    x = np.zeros((3, 4, 4), np.uint8)
    np.savez(tmp_path / "samples.npz", x, np.array([2, 0, 1]))  # arr_0, arr_1: what ddpm sample --npz writes
    ds = load_dataset(str(tmp_path / "samples.npz"), split="test")
    assert ds.labels.tolist() == [2, 0, 1] and class_names_of(ds) == ["0", "1", "2"]
    np.savez(tmp_path / "two.npz", x, x)  # an arr_1 of images is not labels
    assert load_dataset(str(tmp_path / "two.npz")).labels is None
    np.savez(tmp_path / "xy.npz", x_train=x, y_train=np.array([1, 1, 0]), x_test=x[:1], y_test=np.array([4]))
    assert load_dataset(str(tmp_path / "xy.npz"), split="test").labels.tolist() == [4]
    np.savez(tmp_path / "named.npz", images=x, labels=np.array([0, 1, 0]), y=np.array([5, 5, 5]))
    assert load_dataset(str(tmp_path / "named.npz")).labels.tolist() == [0, 1, 0]  # "labels" before "y"
