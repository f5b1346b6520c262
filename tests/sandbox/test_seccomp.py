"""The seccomp program, run by a small classic-BPF interpreter: every system call number gets the
decision its table says (the filter is built from ranges with shared returns, easy to get off by one)."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workers" / "sandbox"))
import sandbox_seccomp as seccomp  # noqa: E402

sys.path.pop(0)

ALLOW, EPERM, EACCES, ENOSYS, KILL = 0x7FFF0000, 0x50001, 0x5000D, 0x50026, 0x80000000
OWN_PID = 4242


def decide(prog: list[tuple[int, int, int, int]], nr: int, args: tuple[int, ...] = (), arch: int = 0xC000003E) -> int:
    """What the filter returns for system call `nr` with `args` (the low 32 bits of each)."""
    data = struct.pack("<iI", nr, arch) + b"\0" * 8 + b"".join(struct.pack("<Q", a) for a in (*args, 0, 0, 0, 0, 0, 0)[:6])
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == 0x06:
            return k
        else:
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf


def expected(nr: int) -> int:
    names = {v: k for k, v in seccomp._SYS.items()}
    name = names.get(nr)
    if name == "socket":
        return EACCES
    if name in seccomp._NOT_HERE:
        return ENOSYS
    if name in seccomp._DENIED:
        return EPERM
    return ALLOW


PROGRAM = seccomp.program(OWN_PID)


def test_every_system_call_gets_its_tables_decision():
    special = {seccomp._SYS[n] for n in ("clone", "kill", "tkill", "tgkill", "fcntl", "ioctl")}  # argument-dependent
    special |= {*seccomp._OWN_PROCESS.values(), *(nr for nr, _ in seccomp._OWN_PRIORITY.values())}
    wrong = {nr: hex(decide(PROGRAM, nr)) for nr in range(470) if nr not in special and decide(PROGRAM, nr) != expected(nr)}
    assert not wrong


def test_clone_makes_threads_only_and_signals_reach_only_the_run_itself():
    assert decide(PROGRAM, seccomp._SYS["clone"], (0x00010000 | 0x100,)) == ALLOW  # CLONE_THREAD | CLONE_VM
    assert decide(PROGRAM, seccomp._SYS["clone"], (17,)) == EPERM  # a fork: SIGCHLD alone
    for name in ("kill", "tkill", "tgkill"):
        assert decide(PROGRAM, seccomp._SYS[name], (OWN_PID, 9)) == ALLOW
        assert decide(PROGRAM, seccomp._SYS[name], (0, 9)) == ALLOW
        assert decide(PROGRAM, seccomp._SYS[name], (1, 9)) == EPERM


def test_x32_calls_and_other_architectures_are_refused():
    assert decide(PROGRAM, 0x40000000 | 41) == ENOSYS
    assert decide(PROGRAM, 0x40000000 | 0) == ENOSYS
    assert decide(PROGRAM, 0, arch=0x40000003) == KILL  # i386


def test_the_compiled_filter_is_the_program_with_the_runs_pid():
    raw = seccomp.compiled(OWN_PID)
    assert [struct.unpack_from("HBBI", raw, i) for i in range(0, len(raw), 8)] == PROGRAM


def test_no_descriptor_can_name_a_process_for_the_kernel_to_signal():
    """SIGIO's owner (F_SETOWN, F_SETOWN_EX, FIOSETOWN, SIOCSPGRP) and signal (F_SETSIG) would let a run
    have the kernel signal any process of its user: another run, or a rootless worker."""
    for name, command in (("fcntl", 8), ("fcntl", 10), ("fcntl", 15), ("ioctl", 0x8901), ("ioctl", 0x8902)):
        assert decide(PROGRAM, seccomp._SYS[name], (3, command, 1)) == EPERM, (name, command)
    for name, command in (("fcntl", 1), ("fcntl", 3), ("fcntl", 4), ("fcntl", 9), ("ioctl", 0x5401)):
        assert decide(PROGRAM, seccomp._SYS[name], (3, command, 0)) == ALLOW, (name, command)


def test_limits_priority_and_scheduling_reach_only_the_run_itself():
    """prlimit, setpriority, sched_* and friends name any process of the run's user: another run (its CPU or
    memory limit lowered, it failed), or, for a rootless worker, the worker itself. Only the run (0 or its
    pid), its own group, and never a whole user (PRIO_USER, IOPRIO_WHO_USER)."""
    for nr in seccomp._OWN_PROCESS.values():
        assert decide(PROGRAM, nr, (OWN_PID, 0)) == ALLOW, nr
        assert decide(PROGRAM, nr, (0, 0)) == ALLOW, nr
        assert decide(PROGRAM, nr, (OWN_PID + 1, 0)) == EPERM, nr
    for nr, user in seccomp._OWN_PRIORITY.values():
        for which in range(user):  # the process, its group
            assert decide(PROGRAM, nr, (which, 0, 5)) == ALLOW, (nr, which)
            assert decide(PROGRAM, nr, (which, OWN_PID, 5)) == ALLOW, (nr, which)
            assert decide(PROGRAM, nr, (which, 1, 5)) == EPERM, (nr, which)
        assert decide(PROGRAM, nr, (user, 0, 5)) == EPERM, nr
        assert decide(PROGRAM, nr, (user, OWN_PID, 5)) == EPERM, nr
