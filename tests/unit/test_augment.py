"""Augmentation round trips: every transform and colour map reverts to the original exactly."""

import random

import pytest

from arcsynth.common.augment import TRANSFORMS, Augmentation, random_augmentation
from arcsynth.common.data import load_tasks

GRID = [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_round_trip_identity_for_every_transform_and_colour_maps(transform):
    rng = random.Random(transform)
    for _ in range(20):
        colours = list(range(1, 10))
        rng.shuffle(colours)
        aug = Augmentation(transform=transform, colours=(0, *colours))
        width = rng.randint(1, 30)
        grid = [[rng.randrange(10) for _ in range(width)] for _ in range(rng.randint(1, 30))]
        assert aug.revert(aug.apply(grid)) == grid


def test_known_transforms_and_background_kept():
    assert Augmentation(transform="rot90").apply(GRID) == [[2, 5], [1, 4], [0, 3]]
    assert Augmentation(transform="transpose").apply(GRID) == [[0, 3], [1, 4], [2, 5]]
    swap = Augmentation(colours=(0, 2, 1, 3, 4, 5, 6, 7, 8, 9))
    assert swap.apply(GRID) == [[0, 2, 1], [3, 4, 5]]


def test_whole_task_is_augmented_and_original_untouched():
    task = load_tasks("arc-agi-1/training", task_ids=["74dd1130"])[0]
    aug = random_augmentation(random.Random(1))
    out = aug.apply_task(task)
    assert [aug.revert(p.input) for p in out.train] == [p.input for p in task.train]
    assert [aug.revert(p.output) for p in out.test] == [p.output for p in task.test]


@pytest.mark.parametrize("bad", [dict(transform="spin"), dict(colours=(1, 0, 2, 3, 4, 5, 6, 7, 8, 9)),
                                 dict(colours=(0, 1, 1, 3, 4, 5, 6, 7, 8, 9))])
def test_invalid_augmentations_rejected(bad):
    with pytest.raises(ValueError):
        Augmentation(**bad)
