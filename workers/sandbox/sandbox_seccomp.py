"""The seccomp filter every run installs on itself before the untrusted program runs.

A classic-BPF filter, written out because libseccomp's Python bindings are rarely installed.
x86_64 syscall numbers; other architectures run without this layer (`available()` says so).
Part of the helper: imports nothing from the project.
"""

from __future__ import annotations

import ctypes
import platform
import struct

_SYS = {"socket": 41, "clone": 56, "fork": 57, "vfork": 58, "execve": 59, "kill": 62,
        "ptrace": 101, "chroot": 161, "pivot_root": 155, "mount": 165, "umount2": 166, "tkill": 200,
        "tgkill": 234, "unshare": 272, "open_by_handle_at": 304, "setns": 308,
        "process_vm_readv": 310, "process_vm_writev": 311, "execveat": 322, "clone3": 435,
        # Signals by other routes than kill/tkill/tgkill (which may only name the run itself).
        "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_send_signal": 424, "pidfd_open": 434,
        "pidfd_getfd": 438,
        # Joining another process group (another run's, or the worker's, of the same session), where
        # kill(0) would reach all of it.
        "setpgid": 109,
        # System V and POSIX IPC: objects that outlive the run and are shared with the host.
        "shmget": 29, "shmat": 30, "shmctl": 31, "semget": 64, "semop": 65, "semctl": 66, "shmdt": 67,
        "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semtimedop": 220, "mq_open": 240,
        "mq_unlink": 241, "mq_timedsend": 242, "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245,
        # The new mount API, kernel keyrings (the worker's session keyring is inherited), and
        # interfaces that run work the filter cannot see (io_uring) or serve kernel exploits.
        "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433,
        "mount_setattr": 442, "add_key": 248, "request_key": 249, "keyctl": 250, "io_uring_setup": 425,
        "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321, "perf_event_open": 298,
        "userfaultfd": 323, "syslog": 103, "ioctl": 16, "fcntl": 72}
# Commands that make the kernel signal a process of the caller's choosing (SIGIO and SIGURG when a
# descriptor is ready): fcntl's F_SETOWN, F_SETSIG, F_SETOWN_EX; ioctl's FIOSETOWN, SIOCSPGRP.
_SIGNAL_OWNER = {"fcntl": (8, 10, 15), "ioctl": (0x8901, 0x8902)}
# Calls that change another process of the run's user, named by its pid in the first argument (its
# limits, scheduling, memory placement): another run, or every process of a rootless worker's user.
# Allowed on the run itself alone (0 or its own pid).
_OWN_PROCESS = {"prlimit64": 302, "sched_setparam": 142, "sched_setscheduler": 144, "sched_setaffinity": 203,
                "sched_setattr": 314, "migrate_pages": 256, "move_pages": 279}
# (which, who) calls: the same, and never for a whole user (PRIO_USER, IOPRIO_WHO_USER).
_OWN_PRIORITY = {"setpriority": (141, 2), "ioprio_set": (251, 3)}
_DENIED = ("fork", "vfork", "execve", "execveat", "ptrace", "mount", "umount2", "chroot", "pivot_root",
           "unshare", "setns", "open_by_handle_at", "process_vm_readv", "process_vm_writev",
           "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal", "pidfd_open", "pidfd_getfd", "setpgid",
           "shmget", "shmat", "shmctl", "semget", "semop", "semctl", "shmdt", "msgget", "msgsnd", "msgrcv",
           "msgctl", "semtimedop", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify",
           "mq_getsetattr", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
           "mount_setattr", "add_key", "request_key", "keyctl", "bpf", "perf_event_open", "userfaultfd", "syslog")
_NOT_HERE = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")  # ENOSYS: as if the kernel had none
_X32 = 0x40000000  # x32 system calls carry this bit, under the same audit arch: none is allowed
_AUDIT_ARCH_X86_64 = 0xC000003E
_CLONE_THREAD = 0x00010000
_RET_ALLOW, _RET_KILL = 0x7FFF0000, 0x80000000
_RET_ERRNO = 0x00050000
_LD_W_ABS, _JEQ_K, _JGT_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x25, 0x35, 0x45, 0x06
_libc = ctypes.CDLL(None, use_errno=True)


def available() -> bool:
    """Whether this machine's architecture has the filter."""
    return platform.machine() == "x86_64"


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    """Sorted runs of consecutive numbers, as (first, last)."""
    runs: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs


def program(own_pid: int) -> list[tuple[int, int, int, int]]:
    """Deny new processes, exec, sockets, signals to others (by kill, pidfds, sigqueue, a SIGIO
    owner, or kill(0) after joining another process group with setpgid), changes to other processes
    (limits, priority, scheduling: `_OWN_PROCESS`), ptrace, mounts, namespace tricks, IPC, keyrings,
    io_uring and x32 calls (see `_SYS`).

    Denied numbers are tested as ranges (one or two instructions each), each jumping to its
    errno's one return at the end: a short filter attaches faster (the kernel compiles it per run).
    """
    eperm, eacces, enosys = _RET_ERRNO | 1, _RET_ERRNO | 13, _RET_ERRNO | 38
    prog = [
        (_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), (_RET_K, 0, 0, _RET_KILL),
        (_LD_W_ABS, 0, 0, 0), (_JGE_K, 0, 1, _X32), (_RET_K, 0, 0, enosys),
    ]
    returns = (eacces, enosys, eperm)
    jumps: list[tuple[int, int]] = []  # (instruction, which return): offsets filled in once the end is known
    # glibc falls back from clone3 (ENOSYS) to clone, checked below.
    for which, names in enumerate((("socket",), _NOT_HERE, _DENIED)):
        for first, last in _ranges([_SYS[n] for n in names]):
            if first == last:
                jumps.append((len(prog), which))
                prog.append((_JEQ_K, 0, 0, first))
            else:  # first <= nr: test nr > last; else skip it. Not above last: deny.
                prog.append((_JGE_K, 0, 1, first))
                jumps.append((len(prog), which))
                prog.append((_JGT_K, 0, 0, last))
    # clone: threads only.
    prog.extend([(_JEQ_K, 0, 4, _SYS["clone"]), (_LD_W_ABS, 0, 0, 16),
                 (_JSET_K, 1, 0, _CLONE_THREAD), (_RET_K, 0, 0, eperm), (_RET_K, 0, 0, _RET_ALLOW)])
    # kill/tkill/tgkill, limits, scheduling and memory placement: only this process itself (its pid, or 0:
    # itself or its own group, which it cannot leave: setpgid is denied), the first argument; one shared
    # check after the numbers.
    own = [_SYS["kill"], _SYS["tkill"], _SYS["tgkill"], *_OWN_PROCESS.values()]
    prog.extend((_JEQ_K, len(own) - 1 - i, 5 if i == len(own) - 1 else 0, nr) for i, nr in enumerate(own))
    prog.extend([(_LD_W_ABS, 0, 0, 16), (_JEQ_K, 2, 0, own_pid), (_JEQ_K, 1, 0, 0), (_RET_K, 0, 0, eperm),
                 (_RET_K, 0, 0, _RET_ALLOW)])
    # Priorities: never a whole user (the first argument), else only this process or its group (the second).
    for nr, user in _OWN_PRIORITY.values():
        prog.extend([(_JEQ_K, 0, 7, nr), (_LD_W_ABS, 0, 0, 16), (_JEQ_K, 3, 0, user), (_LD_W_ABS, 0, 0, 24),
                     (_JEQ_K, 2, 0, own_pid), (_JEQ_K, 1, 0, 0), (_RET_K, 0, 0, eperm),
                     (_RET_K, 0, 0, _RET_ALLOW)])
    # fcntl/ioctl: not the commands that choose a process for the kernel to signal.
    for name, commands in _SIGNAL_OWNER.items():
        prog.extend([(_JEQ_K, 0, len(commands) + 2, _SYS[name]), (_LD_W_ABS, 0, 0, 24)])
        for command in commands:
            jumps.append((len(prog), returns.index(eperm)))
            prog.append((_JEQ_K, 0, 0, command))
        prog.append((_RET_K, 0, 0, _RET_ALLOW))
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    at = {which: len(prog) + which for which in range(len(returns))}
    prog.extend((_RET_K, 0, 0, ret) for ret in returns)
    for i, which in jumps:
        code, _, _, k = prog[i]
        offset = at[which] - i - 1
        prog[i] = (code, offset, 0, k) if code == _JEQ_K else (code, 0, offset, k)  # JGT: not above: deny
    return prog


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PID_MARK = 0x7FFFFFF0  # a pid no process has: where the compiled filter takes the run's own pid
_COMPILED: tuple[bytes, tuple[int, ...]] | None = None
_prctl = _libc.prctl  # resolved once, here


def compiled(own_pid: int) -> bytes:
    """The filter of `program(own_pid)` as raw BPF: built once per process, then only the pid patched."""
    global _COMPILED
    if _COMPILED is None:
        prog = program(_PID_MARK)
        spots = tuple(i * 8 + 4 for i, ins in enumerate(prog) if ins[0] == _JEQ_K and ins[3] == _PID_MARK)
        _COMPILED = b"".join(struct.pack("HBBI", *ins) for ins in prog), spots
    raw, spots = _COMPILED
    patched = bytearray(raw)
    for at in spots:
        struct.pack_into("I", patched, at, own_pid)
    return bytes(patched)


class Installer:
    """The filter held ready in memory, so a freshly forked run installs it with one pid patch and one prctl.

    Made once, in the helper; `NO_NEW_PRIVS` (which seccomp requires, and which every process forked
    afterwards inherits) is set then too. A forked process calls `install(os.getpid())` once.
    """

    def __init__(self) -> None:
        raw = compiled(_PID_MARK)
        self.spots = _COMPILED[1] if _COMPILED else ()
        self.buffer = ctypes.create_string_buffer(raw, len(raw))
        self.fprog = _SockFprog(len(raw) // 8, ctypes.addressof(self.buffer))
        self.pointer = ctypes.pointer(self.fprog)
        if _prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS failed")

    def install(self, own_pid: int, pack_into=struct.pack_into) -> None:
        """Install the filter on the calling process (for good: it cannot be removed). Raises OSError."""
        for at in self.spots:
            pack_into("I", self.buffer, at, own_pid)
        if _prctl(22, 2, self.pointer, 0, 0) != 0:  # PR_SET_SECCOMP, MODE_FILTER
            raise OSError(ctypes.get_errno(), "seccomp filter refused")


def install(own_pid: int) -> None:
    """Install the filter on the calling process, building it first (for good). Raises OSError."""
    Installer().install(own_pid)
