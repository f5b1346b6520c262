"""A run's sys.stdout and sys.stderr: made once in the helper, on the run's descriptors 1 and 2.

Both write into the run's output memfd, which the helper reads up to `OUTPUT_CAP` bytes; what a
program prints past that is dropped. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import io
import os

OUTPUT_CAP = 4096  # bytes of a run's output the helper reads back


class _CappedOutput(io.RawIOBase):
    """A run's descriptor 1 or 2 (one memfd) as its `print` writes to it: bytes past `OUTPUT_CAP` in the
    file (all the helper reads) are dropped, not written. Written, they would reach the file-size
    limit, and a correct program that prints a lot would fail on its later inputs."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self.fd

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        room = OUTPUT_CAP - os.lseek(self.fd, 0, os.SEEK_CUR)  # 1 and 2 share the offset (job processes reset it)
        view = memoryview(data)[:max(room, 0)]
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)


def _stream(fd: int) -> io.TextIOWrapper:
    return io.TextIOWrapper(io.BufferedWriter(_CappedOutput(fd)), line_buffering=True)


# A run's sys.stdout and sys.stderr, on its descriptors 1 and 2 (line-buffered: kept even on os._exit).
STDOUT, STDERR = _stream(1), _stream(2)
