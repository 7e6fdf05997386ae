import numpy as np
import torch

from effigy.worlds.digits import augment, load_digits_images, split_indices


def test_digits_are_upsampled_into_minus_one_one():
    images, labels = load_digits_images(16)
    assert images.shape == (1797, 1, 16, 16)
    assert images.min() >= -1 and images.max() <= 1
    assert sorted(set(labels.tolist())) == list(range(10))


def test_split_is_seeded_and_disjoint():
    a_train, a_hold = split_indices(1797)
    b_train, b_hold = split_indices(1797)
    assert np.array_equal(a_train, b_train) and np.array_equal(a_hold, b_hold)
    assert not set(a_train) & set(a_hold) and len(a_train) + len(a_hold) == 1797
    assert not np.array_equal(split_indices(1797, seed=1)[1], a_hold)


def test_augment_shifts_by_at_most_one_pixel():
    image = torch.full((1, 1, 5, 5), -1.0)
    image[0, 0, 2, 2] = 1.0
    shifted = augment(image.repeat(50, 1, 1, 1), torch.Generator().manual_seed(0))
    positions = {tuple((s[0] == 1).nonzero()[0].tolist()) for s in shifted}
    assert positions <= {(r, c) for r in (1, 2, 3) for c in (1, 2, 3)} and len(positions) > 3
