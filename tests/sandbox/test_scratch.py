"""What a run writes is gone before the next one, and what it may not write it cannot.

A run's directory is removed whatever the run left there (a tree too deep to walk recursively, its
own permissions taken off); a rootless helper's runs keep its user and so own its /tmp (and, in the
fallback view, /var/tmp, /dev/shm and /run/lock): each is emptied and given its mode back. In the
fallback view the host's tree is read-only, so files of the run's user stay as they were. Each time,
the next (correct) program is graded exactly as on a fresh helper.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import Executor, IsolationUnavailable

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[5, 6]]}])
# Prints what it finds in the scratch places besides its own directory (a fresh helper's /tmp holds only the
# folders on the way to an interpreter installed under /tmp, as a CI checkout's is), and flips the grid.
CHECK = """import json, os
def transform(grid):
    here = os.path.basename(os.getcwd())
    seen = {d: sorted(set(os.listdir(d)) - {here}) for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
            if os.path.isdir(d)}
    print(json.dumps([seen, oct(os.stat("/tmp").st_mode & 0o777)]))
    return grid[:, ::-1]"""
# Nests directories until the tmpfs has no inode left, far deeper than a recursive walk goes.
DEEP = """import os
def transform(grid):
    try:
        while True:
            os.mkdir("d")
            os.chdir("d")
    except OSError:
        pass
    return grid"""
# Writes wherever its user may (a rootless helper's), and takes the permissions off what it made and /tmp.
LITTER = """import os
def transform(grid):
    for d in ("/tmp", "/var/tmp", "/dev/shm", "/run/lock"):
        try:
            open(os.path.join(d, "left"), "w").write("x")
        except OSError:
            pass
    if not os.path.exists("sub"):  # once per run: the inputs share its directory
        os.makedirs("sub/a/b")
        open("sub/a/b/f", "w").write("x")
        os.chmod("sub/a", 0)
        os.chmod(".", 0o500)
    try:
        os.chmod("/tmp", 0)
    except OSError:
        pass
    return grid"""


def graded(ex: Executor, code: str) -> list:
    r = ex.grade(TASK, code)
    return [x.output if x.output is not None else x.message for x in (*r.train, *r.test)]


def looked(ex: Executor) -> str:
    """What CHECK saw, once it graded right."""
    assert graded(ex, CHECK) == [[[2, 1]], [[6, 5]]]
    return ex.last_output.splitlines()[-1]


@pytest.mark.parametrize("isolation", ["run", "job"])
@pytest.mark.parametrize("minimal", [True, False], ids=["minimal-root", "fallback-view"])
def test_a_directory_too_deep_to_walk_is_removed_and_the_next_run_fits(minimal, isolation):
    """Left in /tmp (a recursive removal raised RecursionError), the tree used every inode of it: no later
    run could have its directory made, and each got `crashed` for the rest of the helper's life. The
    fallback view's /tmp had no inode limit: the run nested directories (kernel memory, not its own) until
    its time ran out, and their removal held up the next run for longer still."""
    ex = Executor(timeout_s=8.0, isolation=isolation, minimal_root=minimal)
    try:
        if not ex.start()["mount_namespace"]:
            pytest.skip("needs a mount namespace")
        fresh = looked(ex)
        assert graded(ex, DEEP) == [[[1, 2]], [[5, 6]]]
        assert looked(ex) == fresh
        deep, check = ex.run_many([DEEP, CHECK], [[[1, 2]]])
        assert check[0][0].output == [[2, 1]] and check[2].splitlines()[-1] == fresh
    finally:
        ex.close()


@pytest.fixture(scope="module")
def as_nobody() -> Iterator[str]:
    """A command that starts this interpreter as uid 65534 (so the helper is rootless)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to start a helper as another user (setpriv)")
    folder = tempfile.mkdtemp(prefix="arcsynth-rootless-")
    os.chmod(folder, 0o755)
    wrapper = Path(folder) / "python-as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid 65534 --regid 65534 --clear-groups {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    yield str(wrapper)
    shutil.rmtree(folder, ignore_errors=True)


def rootless(python: str, minimal: bool, isolation: str) -> Executor:
    ex = Executor(timeout_s=10.0, python=python, minimal_root=minimal, isolation=isolation)
    try:
        layers = ex.start()
    except IsolationUnavailable as exc:
        pytest.skip(f"no rootless helper here: {exc}")
    if not layers["mount_namespace"] or layers["unprivileged_user"] or layers["minimal_root"] != minimal:
        ex.close()
        pytest.skip("needs a rootless helper with a mount namespace")
    return ex


@pytest.mark.parametrize("isolation", ["run", "job"])
@pytest.mark.parametrize("minimal", [True, False], ids=["minimal-root", "fallback-view"])
def test_a_rootless_helpers_scratch_places_are_put_back_after_each_run(as_nobody, minimal, isolation):
    """A rootless helper's runs own its /tmp: files left there reached every later run, and with /tmp's
    mode taken off no later run's directory could be made (every one `crashed`, or failed at its cwd)."""
    ex = rootless(as_nobody, minimal, isolation)
    try:
        fresh = looked(ex)
        assert graded(ex, LITTER) == [[[1, 2]], [[5, 6]]]
        assert looked(ex) == fresh
        runs = ex.run_many([LITTER, CHECK, DEEP, CHECK], [[[1, 2]]])
        assert [r[0][0].output for r in runs] == [[[1, 2]], [[2, 1]], [[1, 2]], [[2, 1]]]
        assert [runs[i][2].splitlines()[-1] for i in (1, 3)] == [fresh, fresh]
    finally:
        ex.close()


def test_a_rootless_fallback_view_keeps_the_hosts_files_as_they_were(as_nobody):
    """In the fallback view a rootless helper's runs see the host's tree as its user: they rewrote that
    user's files (its home, caches, interpreter) and made new ones. The tree is read-only there."""
    parent = next((d for d in ("/srv", "/opt", "/mnt", "/var/cache") if os.path.isdir(d)
                   and os.stat(d).st_mode & 0o005 == 0o005), None)
    if parent is None:
        pytest.skip("no folder outside the fallback view's scratch places that 65534 can walk to")
    folder = Path(tempfile.mkdtemp(prefix="arcsynth-victim-", dir=parent))
    try:
        (folder / "f").write_text("orig")
        os.chmod(folder, 0o755)
        for path in (folder, folder / "f"):
            os.chown(path, 65534, 65534)
        ex = rootless(as_nobody, False, "run")
        try:
            code = (f"def transform(grid):\n    for name in ('f', 'new'):\n        try:\n"
                    f"            open('{folder}/' + name, 'w').write('x')\n        except OSError:\n"
                    f"            pass\n    return grid")
            assert graded(ex, code) == [[[1, 2]], [[5, 6]]]
            looked(ex)
        finally:
            ex.close()
        assert sorted(os.listdir(folder)) == ["f"] and (folder / "f").read_text() == "orig"
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("user", ["root", "rootless"])
def test_the_fallback_views_dev_holds_no_terminal(user, request):
    """The fallback view showed the host's /dev: a run opened /dev/tty (the worker's controlling terminal,
    as `arcsynth local` in a shell has one) and wrote to it, or could type into it; a rootless helper's run
    could open that user's /dev/pts/N as well. There, /dev holds the minimal root's nodes alone."""
    if user == "root":
        ex = Executor(timeout_s=10.0, minimal_root=False)
        if not ex.start()["mount_namespace"]:
            ex.close()
            pytest.skip("needs a mount namespace")
    else:
        ex = rootless(request.getfixturevalue("as_nobody"), False, "run")
    code = ("import os\ndef transform(grid):\n    assert set(os.listdir('/dev')) <= {'null', 'zero', 'full', 'random', "
            "'urandom', 'shm'}, os.listdir('/dev')\n    os.write(os.open('/dev/null', os.O_WRONLY), b'x')\n"
            "    assert len(open('/dev/urandom', 'rb').read(8)) == 8\n    return grid[:, ::-1]")
    try:
        assert graded(ex, code) == [[[2, 1]], [[6, 5]]]
    finally:
        ex.close()
