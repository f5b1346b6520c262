"""A small DSL in the style of BARC's `common.py`, written for arcsynth's tests (BARC's own file is
not shipped here): programs in BARC's style `from common import *`, name colours through `Color`,
and call helpers some of which import scipy inside the function, as BARC's do.

Grids are numpy arrays indexed `[x, y]` as BARC's are; nothing here depends on the orientation.
"""

import numpy as np


class Color:
    BLACK = 0
    BLUE = 1
    RED = 2
    GREEN = 3
    YELLOW = 4
    GREY = 5
    GRAY = 5
    PINK = 6
    ORANGE = 7
    TEAL = 8
    PURPLE = 8
    MAROON = 9
    BROWN = 9
    ALL_COLORS = [BLACK, BLUE, RED, GREEN, YELLOW, GREY, PINK, ORANGE, TEAL, MAROON]
    NOT_BLACK = [BLUE, RED, GREEN, YELLOW, GREY, PINK, ORANGE, TEAL, MAROON]


def find_connected_components(grid, background=Color.BLACK, connectivity=4, monochromatic=True):
    """Each connected object of non-background cells, as a grid of the input's shape holding only it."""
    from scipy import ndimage  # imported inside, as BARC's helpers do

    structure = np.ones((3, 3)) if connectivity == 8 else None
    objects = []
    colours = [c for c in np.unique(grid) if c != background] if monochromatic else [None]
    for colour in colours:
        mask = grid == colour if colour is not None else grid != background
        labels, count = ndimage.label(mask, structure=structure)
        for i in range(1, count + 1):
            obj = np.full_like(grid, background)
            obj[labels == i] = grid[labels == i]
            objects.append(obj)
    return objects


def bounding_box(grid, background=Color.BLACK):
    """(x, y, width, height) of the non-background cells."""
    xs, ys = np.nonzero(grid != background)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def crop(grid, background=Color.BLACK):
    x, y, w, h = bounding_box(grid, background)
    return grid[x:x + w, y:y + h]


def blit_sprite(grid, sprite, x, y, background=None):
    """Draw `sprite` onto a copy of `grid` with its corner at (x, y); `background` cells stay see-through."""
    out = grid.copy()
    for dx in range(sprite.shape[0]):
        for dy in range(sprite.shape[1]):
            if background is None or sprite[dx, dy] != background:
                if 0 <= x + dx < out.shape[0] and 0 <= y + dy < out.shape[1]:
                    out[x + dx, y + dy] = sprite[dx, dy]
    return out


def object_area(obj, background=Color.BLACK):
    from scipy import ndimage

    return int(ndimage.sum(obj != background))
