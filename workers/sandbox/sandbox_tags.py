"""Dict version tags (PEP 509), read in bulk: how job isolation's check sees that any watched dict changed.

`OFFSET` is where a dict keeps its version tag on this interpreter (None where it has none that
behaves as one); `TagReader(addresses)` reads the tags at those addresses in one numpy gather.
Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import sys

import numpy as np


def _dict_tag() -> int | None:
    """Offset of a dict's version tag (PEP 509; CPython 3.11 to 3.13) if it behaves as one here, else None."""
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return None
    offset = 3 * ctypes.sizeof(ctypes.c_void_p)  # refcount, type, ma_used
    d: dict = {"a": 1}
    read = ctypes.c_uint64.from_address(id(d) + offset)
    before = read.value
    d["a"] = 1  # the same value: no change
    same = read.value
    d["a"] = 2
    changed = read.value
    d["b"] = 3
    return offset if before == same and changed != same and read.value != changed else None


OFFSET = _dict_tag()


class TagReader:
    """Reads the version tags at `addresses` (of dicts kept alive elsewhere) in one gather, as bytes.

    A numpy view over the address range they span: no memory is copied or touched but the tags. What
    it calls (`ndarray.take`, `tobytes`) belongs to an immutable type, so a program cannot patch it.
    """

    def __init__(self, addresses: list[int]) -> None:
        base = min(addresses)
        span = (max(addresses) - base) // 8 + 1
        view = type("Memory", (), {"__array_interface__": {"data": (base, True), "shape": (span,),
                                                           "typestr": "<u8", "version": 3}})()
        self.take = np.asarray(view).take
        self.offsets = np.array([(a - base) // 8 for a in addresses], dtype=np.int64)

    def __call__(self) -> bytes:
        return self.take(self.offsets).tobytes()
