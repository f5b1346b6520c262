"""The spawner: one process, forked from the helper once it is ready, that forks every run and job process.

A fork write-protects every page of the forking process, and whatever that process then writes
while its child lives is copied first, page by page (a fault and a copy, several microseconds each
on a virtual machine). The helper answers requests: it reads a run's results, parses and replies
while the run lives, a couple of hundred pages per run. The spawner only forks and reaps, touching a
few; the helper, which no longer forks runs, copies none. Every run starts from the same image: the
helper's as it was when ready.

`Spawner.start(child)` forks the spawner; `child(kind, request, folder, wfd, out)` is what a forked
process runs (it never returns). For each process:
- `spawn(kind, request, folder)` sends the request; the spawner makes the process's output memfd and
  result pipe, forks, and answers with the pid and (as SCM_RIGHTS) the pipe's read end and the memfd;
  a job process ("j") starts with SIGUSR1 blocked, as `sandbox_job` expects.
- `reap(pid)`, once the helper has killed the process's group: the spawner reaps it (so its pid
  cannot name another process until then) and answers with its wait status.
Wire: helper to spawner, a pipe: kind (1 byte), length (4 bytes, little-endian), the JSON of the
request with `folder`; then b"k" before a reap. Spawner to helper, a SOCK_SEQPACKET socket: b"P" and
the pid (4 bytes) with the two descriptors; b"S" and the status (4 bytes). The spawner exits when the
pipe closes, and dies with the helper (PDEATHSIG). `SpawnerGone` when it is gone: the helper then
exits, and the executor starts a new one. Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import Callable

import sandbox_fork as forking
import sandbox_run as run

GO = signal.SIGUSR1  # a job process's go signal (see sandbox_job), blocked from its first instruction
_HEADER = 5


class SpawnerGone(RuntimeError):
    """The spawner died or broke the protocol."""


def _read_exact(fd: int, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            return b""
        data += chunk
    return data


def _serve(requests: int, replies: socket.socket, child: Callable[..., None]) -> None:
    """The spawner's loop: one process at a time, forked, announced, reaped when the helper says."""
    send_fds, waitpid, close = socket.send_fds, os.waitpid, os.close
    while True:
        header = _read_exact(requests, _HEADER)
        if not header:
            os._exit(0)
        kind = header[:1]
        payload = _read_exact(requests, int.from_bytes(header[1:], "little"))
        out = os.memfd_create("arcsynth-output", os.MFD_CLOEXEC)
        rfd, wfd = os.pipe()
        if kind == b"j":
            signal.pthread_sigmask(signal.SIG_BLOCK, {GO})
        pid = forking.fork()
        if pid == 0:
            try:  # the spawner's own descriptors and `rfd` are closed by the confinement
                req = json.loads(payload)
                child(kind, req, req.pop("folder"), wfd, out)
            finally:
                os._exit(run.FAILED)
        if kind == b"j":
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {GO})
        close(wfd)
        send_fds(replies, [b"P" + pid.to_bytes(4, "little")], [rfd, out])
        close(rfd)
        close(out)
        if _read_exact(requests, 1) != b"k":
            os._exit(0)
        _, status = waitpid(pid, 0)
        replies.send(b"S" + status.to_bytes(4, "little", signed=True))


def _close_all_but(keep: set[int]) -> None:
    """Close every descriptor from 3 up but those in `keep`."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


class Spawner:
    """The helper's end of the spawner (see the module docstring)."""

    def __init__(self, pid: int, requests: int, replies: socket.socket) -> None:
        self.pid = pid
        self.requests = requests
        self.replies = replies

    @classmethod
    def start(cls, child: Callable[..., None]) -> Spawner:
        """Fork the spawner from the calling (ready) helper."""
        theirs, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        rfd, wfd = os.pipe()
        helper = os.getpid()
        pid = forking.fork()
        if pid == 0:
            try:
                run.die_with_parent()
                if os.getppid() != helper:
                    os._exit(0)
                os.dup2(run.devnull(), 0)  # the executor's requests and replies are the helper's alone
                _close_all_but({rfd, theirs.fileno(), run.devnull()})
                _serve(rfd, theirs, child)
            finally:
                os._exit(run.FAILED)
        theirs.close()
        os.close(rfd)
        return cls(pid, wfd, ours)

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.requests, data):]
        except OSError as exc:
            raise SpawnerGone(f"the spawner is gone ({exc})") from None

    def spawn(self, kind: bytes, req: dict, folder: str) -> tuple[int, int, int]:
        """Fork a run (b"r") or job process (b"j") for `req`; (pid, result pipe's read end, output memfd)."""
        payload = json.dumps({**req, "folder": folder}).encode()
        self._write(kind + len(payload).to_bytes(4, "little") + payload)
        try:
            message, fds, _, _ = socket.recv_fds(self.replies, 16, 2)
        except OSError as exc:
            raise SpawnerGone(f"the spawner is gone ({exc})") from None
        if message[:1] != b"P" or len(message) != 5 or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            raise SpawnerGone("the spawner is gone" if not message else "the spawner said something unexpected")
        return int.from_bytes(message[1:], "little"), fds[0], fds[1]

    def reap(self, pid: int) -> int:
        """The wait status of `pid`, the last process spawned, once the caller has killed its group."""
        self._write(b"k")
        try:
            message = self.replies.recv(16)
        except OSError as exc:
            raise SpawnerGone(f"the spawner is gone ({exc})") from None
        if message[:1] != b"S" or len(message) != 5:
            raise SpawnerGone("the spawner is gone" if not message else "the spawner said something unexpected")
        return int.from_bytes(message[1:], "little", signed=True)
