import pytest
import torch

from cnnlab.data.sets.mnist import MEAN as MNIST_MEAN, STD as MNIST_STD
from cnnlab.data.tensors.batching import InMemoryLoader, cutout, normalize, random_affine


def test_shuffled_epoch_visits_every_image_once_and_repeats_with_the_seed():
    x = torch.arange(100, dtype=torch.uint8).view(100, 1, 1).expand(100, 2, 2).contiguous()
    y = torch.arange(100)
    orders = []
    for _ in range(2):
        loader = InMemoryLoader(x, y, 32, shuffle=True, generator=torch.Generator().manual_seed(5))
        batches = list(loader)
        assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
        seen = torch.cat([b[1] for b in batches])
        assert sorted(seen.tolist()) == list(range(100))
        assert all(torch.equal(b[0][:, 0, 0].long(), b[1]) for b in batches)  # images stay with their labels
        orders.append(seen)
    assert torch.equal(orders[0], orders[1])
    assert not torch.equal(orders[0], y)


def test_drop_last_and_bad_arguments():
    x, y = torch.zeros(10, 2, 2, dtype=torch.uint8), torch.zeros(10, dtype=torch.long)
    assert len(InMemoryLoader(x, y, 4, drop_last=True)) == 2
    assert len(list(InMemoryLoader(x, y, 4))) == 3
    with pytest.raises(ValueError):
        InMemoryLoader(x, y, 0)
    with pytest.raises(ValueError):
        InMemoryLoader(x, y[:5], 4)
    with pytest.raises(ValueError):
        InMemoryLoader(x, y, 4, shuffle=True)


def test_normalize_scales_and_standardises():
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    out = normalize(x, MNIST_MEAN, MNIST_STD)
    assert out.shape == (1, 1, 1, 2)
    assert torch.allclose(out.flatten(), torch.tensor([-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD]))


def test_random_affine_is_identity_without_jitter_and_moves_ink_with_it():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(8, 1, 28, 28)
    x[:, :, 10:18, 10:18] = 1.0
    assert torch.equal(random_affine(x, g, 0, 0, 0), x)
    y = random_affine(x, g, max_shift=3, max_rotate=15, max_scale=0.1)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)
    # A small affine change keeps the ink roughly the same amount (scale changes area by <= 21%).
    ratio = y.sum((1, 2, 3)) / x.sum((1, 2, 3))
    assert ((ratio > 0.75) & (ratio < 1.3)).all()


def test_hflip_mirrors_about_half_the_images_exactly_and_nothing_else():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    out = random_affine(x, g, 0.0, 0.0, 0.0, hflip=True)
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 70 < sum(mirrored) < 130


def test_cutout_blanks_one_square_per_image_inside_or_clipped_by_the_edge():
    x = torch.ones(500, 1, 28, 28)
    out = cutout(x, torch.Generator().manual_seed(0), 8)
    blanked = (out == 0).squeeze(1)
    counts = blanked.sum((1, 2))
    assert (counts <= 64).all() and (counts >= 16).all()  # at worst a quarter of the square is inside
    assert (counts == 64).float().mean() > 0.5  # most centres are far enough from the edges
    for img in blanked[:50]:  # what is blanked is one axis-aligned rectangle
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        assert img[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        assert img.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert torch.equal(cutout(x, torch.Generator().manual_seed(0), 0), x)


def test_cutout_of_a_part_of_a_batch_is_that_part_of_the_whole_batch():
    x = torch.rand(10, 1, 28, 28, generator=torch.Generator().manual_seed(3))
    whole = cutout(x, torch.Generator().manual_seed(0), 10)
    part = cutout(x[4:7], torch.Generator().manual_seed(0), 10, rows=(4, 10))
    assert torch.equal(part, whole[4:7])
