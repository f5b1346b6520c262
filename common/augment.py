"""Data augmentation for prompts: the 8 rotations/reflections and colour permutations keeping 0.

An `Augmentation` is applied to a whole task before prompting; programs then run on the
augmented inputs, and their outputs are reverted before scoring against the original task.
"""

from __future__ import annotations

import random

import numpy as np
from pydantic import Field, field_validator

from arcsynth.common.models import Frozen, Pair, Task

Grid = list[list[int]]

# The dihedral group of the square: (forward, inverse) on 2-D arrays.
_TRANSFORMS = {
    "identity": (lambda a: a, lambda a: a),
    "rot90": (lambda a: np.rot90(a, 1), lambda a: np.rot90(a, -1)),
    "rot180": (lambda a: np.rot90(a, 2), lambda a: np.rot90(a, 2)),
    "rot270": (lambda a: np.rot90(a, -1), lambda a: np.rot90(a, 1)),
    "flip_lr": (np.fliplr, np.fliplr),
    "flip_ud": (np.flipud, np.flipud),
    "transpose": (lambda a: a.T, lambda a: a.T),
    "antitranspose": (lambda a: np.rot90(a, 2).T, lambda a: np.rot90(a.T, 2)),
}
TRANSFORMS = tuple(_TRANSFORMS)
IDENTITY_COLOURS = tuple(range(10))


class Augmentation(Frozen):
    transform: str = "identity"
    colours: tuple[int, ...] = Field(IDENTITY_COLOURS, min_length=10, max_length=10)

    @field_validator("transform")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in _TRANSFORMS:
            raise ValueError(f"unknown transform {v!r}; one of {', '.join(TRANSFORMS)}")
        return v

    @field_validator("colours")
    @classmethod
    def _permutation(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if sorted(v) != list(range(10)) or v[0] != 0:
            raise ValueError("colours must permute 0..9 and keep 0 (the background) in place")
        return v

    def apply(self, grid: Grid) -> Grid:
        forward, _ = _TRANSFORMS[self.transform]
        return np.asarray(self.colours)[forward(np.asarray(grid))].tolist()

    def revert(self, grid: Grid) -> Grid:
        _, inverse = _TRANSFORMS[self.transform]
        back = np.argsort(self.colours)
        return inverse(back[np.asarray(grid)]).tolist()

    def apply_task(self, task: Task) -> Task:
        def pair(p: Pair) -> Pair:
            return Pair(input=self.apply(p.input), output=None if p.output is None else self.apply(p.output))

        return Task(id=task.id, train=[pair(p) for p in task.train], test=[pair(p) for p in task.test])

    @property
    def is_identity(self) -> bool:
        return self.transform == "identity" and self.colours == IDENTITY_COLOURS


def random_augmentation(rng: random.Random) -> Augmentation:
    colours = list(range(1, 10))
    rng.shuffle(colours)
    return Augmentation(transform=rng.choice(TRANSFORMS), colours=(0, *colours))
