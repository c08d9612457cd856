"""DiffAugment: the transforms on known images, their gradients, and draws that do not depend on the world size."""

import pytest
import torch

from distgan.augment import DiffAugment, color, cut_out, translate
from distgan.config import parse_policy
from distgan.errors import ConfigError
from distgan.seeding import local_rows


def test_translate_moves_pixels_and_fills_zeros():
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    moved = translate(image, torch.tensor([[1, -1]]), reach=1)  # one row down, one column left
    expected = torch.tensor([[0.0, 0.0, 0.0, 0.0],
                             [2.0, 3.0, 4.0, 0.0],
                             [6.0, 7.0, 8.0, 0.0],
                             [10.0, 11.0, 12.0, 0.0]])
    assert torch.equal(moved[0, 0], expected)
    assert torch.equal(translate(image, torch.zeros(1, 2, dtype=torch.int64), reach=2), image)


def test_cut_out_zeros_square_clipped_at_border():
    images = torch.ones(2, 3, 6, 6)
    cut = cut_out(images, torch.tensor([[0, 3], [3, 3]]), side=3)
    assert cut[0, :, 0:2, 2:5].eq(0).all()
    assert cut[0].sum() == 3 * (36 - 6)  # 2 rows x 3 columns inside
    assert cut[1, :, 2:5, 2:5].eq(0).all()
    assert cut[1].sum() == 3 * (36 - 9)


def test_color_identity_and_brightness():
    images = torch.rand(2, 3, 4, 4) * 2 - 1
    same = color(images, torch.zeros(2), torch.ones(2), torch.ones(2))
    torch.testing.assert_close(same, images)
    brighter = color(images, torch.tensor([0.25, -0.5]), torch.ones(2), torch.ones(2))
    torch.testing.assert_close(brighter - images, torch.tensor([0.25, -0.5]).view(2, 1, 1, 1).expand_as(images))
    gray = color(images, torch.zeros(2), torch.zeros(2), torch.ones(2))  # saturation 0: all channels equal
    torch.testing.assert_close(gray[:, 0], gray[:, 2])


def test_augment_is_differentiable():
    augment = DiffAugment(("color", "translation", "cutout"), 8)
    images = torch.randn(4, 3, 8, 8, requires_grad=True)
    params = augment.draw(0, "augment_real", 5, 4, torch.device("cpu"))
    augment(images, params).square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    # Pixels that a cutout alone zeroed receive no gradient.
    plain = torch.ones(1, 1, 6, 6, requires_grad=True)
    cut_out(plain, torch.tensor([[3, 3]]), side=2).sum().backward()
    assert plain.grad.sum() == 36 - 4
    assert plain.grad[0, 0, 2:4, 2:4].eq(0).all()


def test_draws_follow_seed_and_step_not_rank():
    augment = DiffAugment(("color", "translation", "cutout"), 16)
    device = torch.device("cpu")
    full = augment.draw(3, "augment_fake_G", 7, 8, device)
    again = augment.draw(3, "augment_fake_G", 7, 8, device)
    assert torch.equal(full.shift, again.shift)
    assert torch.equal(full.brightness, again.brightness)
    assert not torch.equal(full.cutout, augment.draw(3, "augment_fake_G", 8, 8, device).cutout)
    assert not torch.equal(full.brightness, augment.draw(3, "augment_real", 7, 8, device).brightness)
    # Two ranks' rows of a step with 2 micro-batches put back together give the full draw.
    rank_parts = [full.select(local_rows(8, 2, rank, 2)).chunk(2) for rank in (0, 1)]
    for micro in (0, 1):
        joined = torch.cat([rank_parts[0][micro].shift, rank_parts[1][micro].shift])
        assert torch.equal(joined, full.shift[micro * 4 : micro * 4 + 4])
    assert full.shift.abs().max() <= 2  # 1/8 of 16 pixels
    assert full.saturation.min() >= 0
    assert full.saturation.max() < 2


def test_policy_parsing():
    assert parse_policy("") == ()
    assert parse_policy("color, translation,cutout") == ("color", "translation", "cutout")
    with pytest.raises(ConfigError, match="invalid augment transform 'flip'"):
        parse_policy("color,flip")
    with pytest.raises(ConfigError, match="twice"):
        parse_policy("color,color")
