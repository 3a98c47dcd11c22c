"""The small classifier as a feature space: it learns digits, round-trips through its file, refuses bad input."""

import hashlib
import json

import numpy as np
import pytest
import safetensors.torch as st
import torch
from safetensors import safe_open

from ddpmkit.data import ImageDataset, load_dataset, to_model_range
from ddpmkit.errors import CheckpointError, DataError, UserError
from ddpmkit.evaluate.classifier import ClassifierConfig, SmallClassifier, _save, load_classifier, train_classifier

STEPS = 100  # a third of the default 300: still 99% held-out on digits, and the file stays well under 30 s


@pytest.fixture(scope="module")
def one_thread():
    # Tiny 8x8 convolutions gain nothing from a second thread, and on shared CI cores the two threads wait on
    # each other: one thread trains several times faster there.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    path = tmp_path_factory.mktemp("clf") / "digits_clf.safetensors"
    result = train_classifier(load_dataset("digits"), path, steps=STEPS, seed=0, progress=False)
    return path, result


def test_learns_digits(trained):
    path, result = trained
    assert result["heldout_accuracy"] >= 0.95 and result["num_heldout"] == 150  # 10% of the 1500 train images
    assert result["train_accuracy"] >= 0.90 and result["steps"] == STEPS and path.is_file()
    assert "comparable only with" in result["note"]


def test_file_carries_its_metadata(trained):
    path, result = trained
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == "ddpmkit-classifier" and meta["data"] == "digits"
    assert (meta["image_size"], meta["channels"], meta["num_classes"]) == ("8", "1", "10")
    assert float(meta["heldout_accuracy"]) == pytest.approx(result["heldout_accuracy"], abs=1e-6)
    assert "ddpmkit_version" in meta and ClassifierConfig(**json.loads(meta["config"])).image_size == 8


def test_extractor_interface_and_accuracy_on_the_test_split(trained):
    path, _ = trained
    ext = load_classifier(path)
    test = load_dataset("digits", split="test")
    out = ext(test.images, batch_size=100)
    assert out["features"].shape == (297, ext.feature_dim) == (297, 128) and out["features"].dtype == np.float64
    assert out["logits"].shape == (297, 10) and out["logits"].dtype == np.float64
    assert (out["logits"].argmax(1) == test.labels).mean() >= 0.85
    assert ext.name == "classifier:digits_clf:digits"
    assert ext.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert not ext.model.training and not any(p.requires_grad for p in ext.model.parameters())
    again = ext(test.images[:50], batch_size=7)["features"]  # GroupNorm: no dependence on the batch
    np.testing.assert_allclose(again, out["features"][:50], rtol=1e-5, atol=1e-5)


def test_save_and_load_give_identical_features(tmp_path):
    torch.manual_seed(1)
    model = SmallClassifier(ClassifierConfig(in_channels=3, image_size=28, num_classes=4, width=16)).eval()
    path = tmp_path / "rgb.safetensors"
    meta = {"format": "ddpmkit-classifier", "format_version": "1", "data": "toy",
            "config": '{"in_channels": 3, "image_size": 28, "num_classes": 4, "width": 16, "feature_dim": 128}'}
    _save(model, meta, path)
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model.features(to_model_range(torch.from_numpy(images))).double().numpy()
    out = load_classifier(path)(images)
    np.testing.assert_array_equal(out["features"], expected)
    np.testing.assert_array_equal(load_classifier(path)(images)["features"], out["features"])


def test_same_seed_same_weights(tmp_path, one_thread):
    ds = load_dataset("digits")
    ds = ImageDataset(ds.images[:300], ds.labels[:300], "digits300")
    for name in ("a", "b"):
        train_classifier(ds, tmp_path / f"{name}.safetensors", steps=3, batch_size=32, augment=True, progress=False)
    a, b = st.load_file(tmp_path / "a.safetensors"), st.load_file(tmp_path / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_image_size_or_channels_is_a_user_error(trained):
    path, _ = trained
    ext = load_classifier(path)
    with pytest.raises(UserError, match=r"samples are 28x28 but the classifier .* trained on 8x8 images"):
        ext(np.zeros((2, 28, 28, 1), np.uint8))
    with pytest.raises(UserError, match="RGB .* grey"):
        ext(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        ext(np.zeros((2, 8, 8, 1), np.float32))


def test_a_data_set_without_labels_is_refused(tmp_path):
    ds = ImageDataset(np.zeros((20, 8, 8, 1), np.uint8), None, "my-folder")
    with pytest.raises(DataError, match="my-folder has no labels; train-classifier needs a labelled data set"):
        train_classifier(ds, tmp_path / "x.safetensors", progress=False)
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupt_or_foreign_files_are_checkpoint_errors(trained, tmp_path):
    path, _ = trained
    raw = path.read_bytes()
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(raw[: len(raw) // 2])
    garbled = tmp_path / "garbled.safetensors"
    garbled.write_bytes(raw[:8] + b"#" * 20 + raw[28:])  # the JSON header no longer parses
    pickle = tmp_path / "pickle.safetensors"
    torch.save({"w": torch.zeros(1)}, pickle)  # a zip with a pickle inside: refused unread
    foreign = tmp_path / "unet.safetensors"
    st.save_file({"w": torch.zeros(1)}, foreign)  # valid safetensors, but no classifier metadata
    for bad in (truncated, garbled, pickle, foreign, tmp_path / "missing.safetensors"):
        with pytest.raises(CheckpointError):
            load_classifier(bad)
    with pytest.raises(CheckpointError, match="not a ddpmkit classifier"):
        load_classifier(foreign)
