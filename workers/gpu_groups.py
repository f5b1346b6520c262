"""Which GPUs each worker gets: a list of GPU indices cut into groups of `tp` (tensor parallel size).

Pure functions, no CUDA: `arcsynth workers` and `arcsynth worker` call them and turn a ValueError
into one line naming their option (exit 2)."""

from __future__ import annotations


def parse_gpus(text: str) -> list[int]:
    """GPU indices from `0,1,2` (spaces and a trailing comma allowed), in the order given.

    Raises ValueError for anything but distinct non-negative integers, or for none at all."""
    parts = [x.strip() for x in text.split(",") if x.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected GPU indices like 0,1, got {text!r}")
    ids = [int(p) for p in parts]
    repeated = sorted({g for g in ids if ids.count(g) > 1})
    if repeated:
        raise ValueError(f"GPU {repeated[0]} is given twice in {text!r}")
    return ids


def gpu_groups(gpus: list[int], tp: int) -> list[list[int]]:
    """Cut `gpus` into consecutive groups of `tp`, one group per worker, in the order given.

    `gpu_groups([0, 1, 2, 3], 2) == [[0, 1], [2, 3]]`; `tp == 1` gives one GPU per worker.
    Raises ValueError when `tp < 1`, when `gpus` is empty or repeats a GPU, or when `tp` does not
    divide the number of GPUs (no GPU is left over or shared)."""
    if tp < 1:
        raise ValueError(f"the tensor parallel size must be at least 1, got {tp}")
    if not gpus:
        raise ValueError("no GPUs to group")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"a GPU is listed twice in {gpus}")
    if len(gpus) % tp:
        raise ValueError(f"{tp} does not divide the {len(gpus)} GPUs {','.join(map(str, gpus))}")
    return [gpus[i:i + tp] for i in range(0, len(gpus), tp)]


def cuda_visible_devices(group: list[int]) -> str:
    """The `CUDA_VISIBLE_DEVICES` value that binds a process to `group`: `[2, 3]` -> `"2,3"`."""
    return ",".join(str(g) for g in group)
