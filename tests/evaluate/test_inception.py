"""The FID Inception-v3: architecture (parameter count, state_dict names), the extractor's contract, weight loading.

The pretrained weights are never here (nothing downloads): the code path runs with random weights of the right
architecture. Each forward at 299x299 costs ~6 GFLOPs per image, so the module shares one extractor and a few images.
"""

import hashlib

import numpy as np
import pytest
import safetensors.torch as st
import torch

from ddpmkit.errors import CheckpointError, DataError, UserError
from ddpmkit.evaluate.inception import FIDInceptionV3, InceptionFeatures, load_inception, random_inception


@pytest.fixture(scope="module")
def extractor():
    return random_inception(seed=0)


@pytest.fixture(scope="module")
def grey_images():
    return np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def grey_out(extractor, grey_images):
    return extractor(grey_images, batch_size=4)


@pytest.fixture
def weights_file(extractor, tmp_path):
    path = tmp_path / "inception.safetensors"
    st.save_file(extractor.net.state_dict(), str(path))
    return path


def test_parameter_count_and_state_dict_names():
    net = FIDInceptionV3()
    count = sum(p.numel() for p in net.parameters())
    print(f"FID Inception-v3 (1008 classes): {count:,} parameters")
    # torchvision's inception_v3 has 27,161,264 with its aux head (3,326,696) and 1000 classes; 8 more classes
    # add 8 * 2049: an independent check of every channel count
    assert count == 27_161_264 - 3_326_696 + 8 * 2049
    keys = net.state_dict().keys()
    for key in ("Conv2d_1a_3x3.conv.weight", "Conv2d_1a_3x3.bn.running_mean", "Conv2d_4a_3x3.bn.running_var",
                "Mixed_5b.branch1x1.conv.weight", "Mixed_5b.branch_pool.bn.bias", "Mixed_6a.branch3x3.conv.weight",
                "Mixed_6e.branch7x7dbl_5.conv.weight", "Mixed_7a.branch7x7x3_4.bn.weight",
                "Mixed_7c.branch3x3dbl_3b.conv.weight", "fc.weight", "fc.bias"):  # fmt: skip
        assert key in keys
    assert not any("Aux" in k for k in keys)
    assert len(keys) == 94 * 6 + 2  # 94 conv+BN layers (weight, 4 BN tensors, counter) and the classifier
    assert net.fc.weight.shape == (1008, 2048)
    assert all(m.eps == 0.001 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert all(m.bias is None for m in net.modules() if isinstance(m, torch.nn.Conv2d))


def test_features_and_logits_of_grey_and_rgb_images(extractor, grey_out):
    assert extractor.name == "inception-v3-fid" and extractor.feature_dim == 2048
    assert len(extractor.weights_sha256) == 64
    rgb = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for out in (grey_out, extractor(rgb, batch_size=2, progress=True)):
        assert out["features"].shape == (4, 2048) and out["logits"].shape == (4, 1008)
        assert out["features"].dtype == out["logits"].dtype == np.float64
        assert np.isfinite(out["features"]).all() and np.isfinite(out["logits"]).all()
        assert not np.allclose(out["features"][0], out["features"][1])  # different images, different features
    # the unbiased logits are the logits less the classifier's bias
    bias = extractor.net.fc.bias.double().numpy()
    np.testing.assert_allclose(grey_out["logits_unbiased"], grey_out["logits"] - bias, atol=1e-5)


def test_eval_mode_frozen_and_grey_is_rgb_repeated(extractor, grey_images, grey_out):
    assert not extractor.net.training and not any(p.requires_grad for p in extractor.net.parameters())
    # a train() from elsewhere is undone by the call; in eval mode an image's features do not depend on its batch,
    # so one image at a time (batch statistics would differ) gives the batch-of-4 result, and grey = RGB repeated
    extractor.net.train()
    again = extractor(np.repeat(grey_images[:2], 3, axis=-1), batch_size=1)
    assert not any(m.training for m in extractor.net.modules())
    for key in ("features", "logits"):
        np.testing.assert_allclose(again[key], grey_out[key][:2], rtol=1e-4, atol=1e-5)


def test_bad_images_are_data_errors(extractor):
    for bad in (np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8, 4), np.uint8),
                np.zeros((0, 8, 8, 3), np.uint8), [[0]]):  # fmt: skip
        with pytest.raises(DataError, match="images"):
            extractor(bad)


def test_no_weights_is_a_one_line_user_error(monkeypatch, tmp_path):
    monkeypatch.delenv("DDPMKIT_INCEPTION", raising=False)
    with pytest.raises(UserError) as info:
        load_inception()
    message = str(info.value)
    assert "\n" not in message and "--inception FILE" in message and "DDPMKIT_INCEPTION" in message
    assert "pt_inception-2015-12-05" in message and "--features FILE" in message
    monkeypatch.setenv("DDPMKIT_INCEPTION", str(tmp_path / "nowhere.safetensors"))
    with pytest.raises(UserError, match="nowhere.safetensors is not a file"):
        load_inception()


def test_weights_round_trip_through_safetensors(extractor, weights_file):
    loaded = load_inception(weights_file)
    assert isinstance(loaded, InceptionFeatures) and not loaded.net.training
    assert not any(p.requires_grad for p in loaded.net.parameters())
    assert loaded.weights_sha256 == hashlib.sha256(weights_file.read_bytes()).hexdigest()
    expected = extractor.net.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in loaded.net.state_dict().items())


def test_weights_from_the_environment_without_batch_counters(extractor, tmp_path, monkeypatch):
    # state_dicts from before PyTorch 0.4.1 have no num_batches_tracked; evaluation never reads it
    path = tmp_path / "old.safetensors"
    st.save_file({k: v for k, v in extractor.net.state_dict().items() if "num_batches" not in k}, str(path))
    monkeypatch.setenv("DDPMKIT_INCEPTION", str(path))
    loaded = load_inception()
    assert torch.equal(loaded.net.Conv2d_1a_3x3.bn.running_var, extractor.net.Conv2d_1a_3x3.bn.running_var)
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_weights_that_do_not_fit_are_checkpoint_errors(extractor, tmp_path):
    wrong = dict(extractor.net.state_dict(), **{"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    path = tmp_path / "imagenet1000.safetensors"
    st.save_file(wrong, str(path))
    with pytest.raises(CheckpointError, match=r"shape of fc.weight is \(1008,2048\) here, \(1000,2048\)"):
        load_inception(path)
    pickle = tmp_path / "pt_inception.pth"
    pickle.write_bytes(b"PK\x03\x04" + bytes(100))  # what torch.save writes: refused unread
    with pytest.raises(CheckpointError, match="pickle"):
        load_inception(pickle)


def test_random_weights_are_deterministic_and_leave_the_global_rng_alone(extractor):
    state = torch.random.get_rng_state()
    a, b = random_inception(seed=3), random_inception(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.net.Mixed_7c.branch_pool.conv.weight, b.net.Mixed_7c.branch_pool.conv.weight)
    assert a.weights_sha256 == b.weights_sha256 != extractor.weights_sha256  # the fixture's is seed 0
