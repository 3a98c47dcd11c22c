"""Noise per image: image i's draws depend only on (seed, i), whatever batch it is in, through every sampler and
the bound."""

import pytest
import torch

from ddpmkit import UNet
from ddpmkit.diffusion import Diffusion
from ddpmkit.noise import ImageNoise, image_seed, randn

SHAPE = (1, 8, 8)


def test_each_row_is_its_image_s_own_stream_whatever_the_batch():
    whole = ImageNoise(7, range(6))
    first, second = whole.randn((6, *SHAPE)), whole.randn((6, *SHAPE))
    parts = [ImageNoise(7, [4, 5]), ImageNoise(7, [0]), ImageNoise(7, [1, 2, 3])]
    again = [p.randn((len(p), *SHAPE)) for p in parts], [p.randn((len(p), *SHAPE)) for p in parts]
    for draw, got in zip((first, second), again):
        assert torch.equal(torch.cat([got[1], got[2], got[0]]), draw)
    alone = torch.randn(SHAPE, generator=torch.Generator().manual_seed(image_seed(7, 3)))
    assert torch.equal(first[3], alone)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first, ImageNoise(8, range(6)).randn(first.shape))
    assert image_seed(0, 1) != image_seed(1, 0)


def test_a_plain_generator_draws_as_before_and_a_wrong_batch_is_refused():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(randn((4, *SHAPE), g1, device="cpu"), torch.randn((4, *SHAPE), generator=g2))
    with pytest.raises(ValueError, match="3 images"):
        ImageNoise(0, range(3)).randn((4, *SHAPE))


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet.from_preset("tiny").eval(), Diffusion.from_name("linear", 12)


@pytest.mark.parametrize("sampler, eta", [("ancestral", None), ("ddim", 1.0), ("dpm++2m-sde", None),
                                          ("dpm++2m", None)])
def test_a_sampler_gives_each_image_the_same_result_in_any_batch(net, sampler, eta):
    model, d = net
    run = lambda idx: d.sample(model, (len(idx), *SHAPE), sampler=sampler, steps=6, eta=eta,  # noqa: E731
                               generator=ImageNoise(5, idx))
    whole = run(list(range(5)))
    assert torch.equal(torch.cat([run([0, 1]), run([2]), run([3, 4])]), whole)
    assert not torch.equal(run([1, 0])[0], whole[0])  # a row is its index's, not its position's


def test_the_bound_gives_each_image_the_same_terms_in_any_batch(net):
    model, d = net
    x0 = torch.rand(4, *SHAPE) * 2 - 1
    whole = d.vlb_terms(model, x0, generator=ImageNoise(2, range(4)))["terms_bpd"]
    parts = [d.vlb_terms(model, x0[i:i + 1], generator=ImageNoise(2, [i]))["terms_bpd"] for i in range(4)]
    assert torch.equal(torch.cat(parts), whole)

