"""A fixed corpus of realistic candidate programs over ARC-AGI-1 training tasks.

Correct, wrong, raising and slow programs in roughly the mix a sampler produces.
"""

from __future__ import annotations

from arcsynth.common.data import load_tasks
from arcsynth.common.models import Task

PROGRAMS = [
    "def transform(grid):\n    return grid[::-1, ::-1]",
    "def transform(grid):\n    return grid.T",
    "def transform(grid):\n    return grid[:, ::-1]",
    "def transform(grid):\n    return grid[::-1]",
    "import numpy as np\ndef transform(grid):\n    return np.hstack([grid, grid])",
    "def transform(grid):\n    g = grid.copy()\n    g[g == 7] = 5\n    return g",
    "def transform(grid):\n    g = grid.copy()\n    g[grid == 5] = 8\n    g[grid == 8] = 5\n    return g",
    "def transform(grid):\n    return [list(r) for r in grid]",
    "def transform(grid):\n    h, w = grid.shape\n    return grid[h // 2:, :w // 2]",
    "def transform(grid):\n    return grid[100][100]",  # raises IndexError
    "def transform(grid):\n    rows = [list(r) for r in grid]\n    return rows[0] + 1",  # raises TypeError
    "import numpy as np\nfrom collections import Counter\n"
    "def transform(grid):\n    c = Counter(grid.flatten().tolist()).most_common(1)[0][0]\n"
    "    return np.full_like(grid, c)",
    "def transform(grid):\n    out = [[0] * len(grid[0]) for _ in grid]\n"
    "    for i in range(len(grid)):\n        for j in range(len(grid[0])):\n"
    "            out[i][j] = int(grid[i][j]) if grid[i][j] else 0\n    return out",
    "def transform(grid):\n    s = 0\n    for i in range(200000):\n        s += i\n    return grid",  # slow
    "def transform(grid):\n    return grid * 2",  # colours out of range on some tasks
    "import numpy as np\ndef transform(grid):\n    return np.rot90(grid)",
]
TASK_IDS = ["6150a2bd", "74dd1130", "67a3c6ac", "68b16354", "a416b8f3", "c8f0f002", "d511f180",
            "3c9b0459", "9dfd6313", "25ff71a9", "b1948b0a", "d037b0a7", "5582e5ca", "ed36ccf7"]


def corpus() -> list[tuple[Task, str]]:
    tasks = load_tasks("arc-agi-1/training", task_ids=TASK_IDS)
    return [(t, p) for t in tasks for p in PROGRAMS]  # 14 x 16 = 224 candidates
