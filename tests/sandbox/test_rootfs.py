"""The filesystem a run sees: the minimal root (interpreter, standard library, numpy, a private /tmp).

Every standard-library module that imports here imports in a run too, even where the interpreter
lives under a directory the run's user cannot enter; nothing a run writes reaches the host; and no
file outside the minimal root (run directories, artifact folders, the project, other packages)
can be read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest

from arcsynth.common.models import Task
from arcsynth.workers.sandbox.executor import Executor, IsolationUnavailable

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}], test=[{"input": [[5, 6]]}])
REPO = Path(__file__).resolve().parents[2]
SKIP = {"antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"}  # open windows or print
# What a program might reasonably import; each must import wherever the interpreter is installed.
COMMON = ["collections", "itertools", "functools", "math", "colorsys", "difflib", "textwrap", "traceback",
          "json", "fractions", "decimal", "dataclasses", "enum", "typing", "string", "re", "heapq", "bisect",
          "statistics", "copy", "operator", "random", "array", "struct", "pprint", "numbers", "abc",
          "contextlib", "datetime", "zoneinfo", "time", "hashlib", "base64", "io", "inspect", "unicodedata",
          "weakref", "types", "csv", "zlib", "pickle", "secrets", "uuid", "graphlib", "warnings", "ast",
          "cmath", "queue", "calendar", "fnmatch", "pathlib", "binascii", "codecs", "reprlib", "keyword",
          "collections.abc", "itertools", "sqlite3", "lzma", "bz2", "gzip", "numpy.polynomial", "numpy.ma",
          "numpy.lib.stride_tricks", "numpy.testing"]


PROBE = """import json, os, site, sys
import numpy
print(json.dumps({"os": os.__file__, "numpy": numpy.__file__, "executable": sys.executable,
                  "sites": site.getsitepackages([sys.prefix, sys.base_prefix])}))"""


def venv_under_tmp(tmp: Path) -> str:
    """A venv under /tmp (as a CI checkout might have) over this interpreter's base, with a copy of numpy."""
    import venv

    venv.create(tmp / "venv", with_pip=False, symlinks=True)
    here = Path(numpy.__file__).resolve().parent.parent
    target = next((tmp / "venv" / "lib").glob("python3*")) / "site-packages"
    for entry in here.iterdir():
        if entry.name.lower().startswith("numpy"):
            shutil.copytree(entry, target / entry.name, symlinks=True)
    return str(tmp / "venv" / "bin" / "python")


def interpreter(name: str, tmp: Path) -> str | None:
    """The interpreters the view is tested with: this one (a venv over pyenv here), a venv under /tmp,
    the system's python3 with its own numpy, and that one as an unprivileged user (user namespaces)."""
    system = "/usr/bin/python3"
    has_system = os.path.exists(system) and \
        subprocess.run([system, "-c", "import numpy"], capture_output=True).returncode == 0
    if name == "this":
        return sys.executable
    if name == "venv-under-tmp":
        return venv_under_tmp(tmp) if str(tmp).startswith("/tmp/") else None
    if name == "system":
        return system if has_system else None
    if has_system and shutil.which("setpriv") and os.geteuid() == 0:
        wrapper = tmp / "python-as-nobody"
        wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid 65534 --regid 65534 --clear-groups {system} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)
    return None


@pytest.fixture(scope="module", params=["this", "venv-under-tmp", "system", "system-as-nobody"])
def python(request, tmp_path_factory) -> Iterator[tuple[str, dict]]:
    """(interpreter command, where its os, numpy, executable and site folders are)."""
    tmp = tmp_path_factory.mktemp("interpreter")
    found = interpreter(request.param, tmp)
    if found is None:
        pytest.skip(f"no {request.param} interpreter with numpy here")
    out = subprocess.run([found, "-I", "-c", PROBE], capture_output=True, text=True, env={},
                         cwd="/", check=True, timeout=120).stdout
    yield found, json.loads(out)
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def ex(python):
    e = Executor(timeout_s=30.0, memory_mb=1024, python=python[0])
    e.start()
    yield e
    e.close()


def run(ex: Executor, body: str) -> list:
    """Run `body` (the inside of transform, which may `return value` as JSON text) and return the value."""
    code = "import json, os\ndef transform(grid):\n    def body():\n" + \
        "".join(f"        {line}\n" for line in body.splitlines()) + \
        "    print(json.dumps(body()))\n    return [[0]]"
    r = ex.grade(TASK, code)
    assert r.test[0].output == [[0]], r.test[0].message
    return json.loads(ex.last_output.splitlines()[-1])


def importable_here(python: str, names: list[str]) -> list[str]:
    """Which of `names` `python` imports, in a fresh isolated process with an empty environment."""
    probe = ("import importlib, json, sys\nok = []\nfor n in json.loads(sys.argv[1]):\n    try:\n"
             "        importlib.import_module(n)\n        ok.append(n)\n    except Exception:\n        pass\n"
             "print(json.dumps(ok))")
    out = subprocess.run([python, "-I", "-c", probe, json.dumps(names)], capture_output=True, text=True,
                         env={}, cwd="/", check=True, timeout=300).stdout
    return json.loads(out.splitlines()[-1])


IMPORT_ALL = """import importlib
failed = []
for name in {names!r}:
    try:
        importlib.import_module(name)
    except BaseException as e:
        failed.append(name + ': ' + type(e).__name__)
return failed"""


def test_the_modules_a_program_might_use_all_import(ex, python):
    names = importable_here(python[0], COMMON)
    assert {"colorsys", "difflib", "textwrap", "traceback", "zoneinfo"} <= set(names)
    assert run(ex, IMPORT_ALL.format(names=names)) == []


def test_every_standard_library_module_that_imports_here_imports_in_a_run(ex, python):
    names = importable_here(python[0], [n for n in sorted(sys.stdlib_module_names) if not n.startswith("_") and n not in SKIP])
    assert len(names) > 150
    assert run(ex, IMPORT_ALL.format(names=names)) == []


def test_the_standard_library_works_not_just_imports(ex):
    body = ("import colorsys, difflib, hashlib, textwrap, decimal, zoneinfo, datetime, lzma\n"
            "zone = zoneinfo.ZoneInfo('UTC') if zoneinfo.available_timezones() else datetime.timezone.utc\n"
            "return [round(colorsys.rgb_to_hsv(1, 0, 0)[1]), difflib.SequenceMatcher(None, 'ab', 'ab').ratio(),\n"
            "        hashlib.sha256(b'').hexdigest()[:4], textwrap.fill('a b', 1), str(decimal.Decimal(1) / 4),\n"
            "        datetime.datetime(2020, 1, 1, tzinfo=zone).year, len(lzma.compress(b'x')) > 0]")
    assert run(ex, body) == [1, 1.0, "e3b0", "a\nb", "0.25", 2020, True]


def needs_minimal_root(ex: Executor) -> None:
    if not ex.layers.get("minimal_root"):
        pytest.skip(f"the minimal root cannot be set up here: {ex.why.get('minimal_root')}")


def test_the_root_holds_only_the_minimal_root(ex, python):
    needs_minimal_root(ex)
    view = run(ex, "return {d: sorted(os.listdir(d)) for d in ('/', '/dev', '/etc', '/tmp')} | "
                   "{'cwd': os.getcwd(), 'proc': os.path.exists('/proc/self')}")
    shown = [python[1]["os"], python[1]["numpy"], python[1]["executable"]]
    allowed = {Path(p).resolve().parts[1] for p in shown} | {"dev", "etc", "tmp", "usr", "lib", "lib32", "lib64", "libx32"}
    assert set(view["/"]) <= allowed, view["/"]
    assert view["/dev"] == ["full", "null", "random", "urandom", "zero"]
    assert set(view["/etc"]) <= {"ld.so.cache"}
    assert os.path.basename(view["cwd"]) in view["/tmp"] and view["cwd"].startswith("/tmp/arcsynth-run-")
    if ex.layers["unprivileged_user"]:  # runs cannot write /tmp itself: it holds this run's folder, and
        # the folders on the way to the interpreter or numpy when they are installed under /tmp
        on_the_way = {Path(p).resolve().parts[2] for p in shown if Path(p).resolve().parts[1] == "tmp"}
        assert set(view["/tmp"]) <= {os.path.basename(view["cwd"])} | on_the_way
    assert not view["proc"]


def test_only_the_offered_packages_are_installed(ex, python):
    needs_minimal_root(ex)
    numpy_site = str(Path(python[1]["numpy"]).resolve().parent.parent)
    sites = [d for d in {*python[1]["sites"], numpy_site} if os.path.isdir(d)]
    others = ("celery", "redis", "pydantic", "arcsynth.common", "arcsynth.workers")  # all installed beside numpy
    body = (f"import importlib\nmissing = []\nfor name in {others!r}:\n"
            "    try:\n        importlib.import_module(name)\n    except ImportError:\n        missing.append(name)\n"
            f"return [missing, {{d: sorted(os.listdir(d)) if os.path.isdir(d) else [] for d in {sites!r}}}]")
    missing, listings = run(ex, body)
    assert missing == list(others)
    for d, entries in listings.items():
        assert all(e.lower().startswith("numpy") for e in entries), (d, entries)
    assert listings[numpy_site], "numpy's own folder is shown"


def test_writes_outside_the_run_directory_fail_or_stay_in_the_sandbox(ex):
    token = f"arcsynth-sandbox-test-{uuid.uuid4().hex}"
    targets = [f"/run/lock/{token}", f"/var/tmp/{token}", f"/dev/shm/{token}", f"/tmp/{token}",
               str(Path.home() / token), str(Path.cwd() / token), str(REPO / token), str(REPO.parent / token),
               str(Path(numpy.__file__).parent / token), str(Path(os.__file__).parent / token), f"/{token}"]
    body = (f"wrote = []\nfor path in {targets!r}:\n    try:\n        os.makedirs(os.path.dirname(path), exist_ok=True)\n"
            "        with open(path, 'w') as f:\n            f.write('x')\n        wrote.append(path)\n"
            "    except OSError:\n        pass\n"
            f"with open({token!r}, 'w') as f:\n    f.write('x')\nreturn wrote")
    run(ex, body)
    for path in targets:
        assert not os.path.exists(path), f"a run wrote {path} on the host"
    assert not [p for p in Path("/tmp").glob(f"arcsynth-run-*/{token}")]


@pytest.fixture
def secrets(tmp_path):
    """Fake run directories and artifact folders, each with the answers in inputs.jsonl, in the usual places."""
    made, folders = [], []
    for parent in (REPO / "runs", REPO / "artifacts", Path.home(), tmp_path, Path(numpy.__file__).resolve().parent.parent):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
        folder = Path(tempfile.mkdtemp(prefix="arcsynth-secret-", dir=parent))
        (folder / "inputs.jsonl").write_text('{"test": [{"output": [[4, 2]]}]}\n')
        os.chmod(folder, 0o755)
        os.chmod(folder / "inputs.jsonl", 0o644)
        folders.append(folder)
    yield folders
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    for parent in made:
        shutil.rmtree(parent, ignore_errors=True)


def test_files_outside_the_minimal_root_cannot_be_read(ex, secrets):
    paths = [str(f / "inputs.jsonl") for f in secrets]
    body = (f"read = []\nfor path in {paths!r}:\n    try:\n        open(path).read()\n        read.append(path)\n"
            "    except OSError:\n        pass\n"
            f"    try:\n        os.listdir(os.path.dirname(path))\n        read.append(os.path.dirname(path))\n"
            "    except OSError:\n        pass\nreturn read")
    assert run(ex, body) == []


def test_the_minimal_root_can_be_required(ex):
    needs_minimal_root(ex)
    e = Executor(require=["minimal_root", "mount_namespace", "network_namespace"])
    try:
        assert e.start()["minimal_root"]
    finally:
        e.close()


def test_a_run_holds_no_capabilities(ex):
    """Not as root's child dropped to 65534, nor in a user namespace (where the helper gives its own up)."""
    if os.uname().machine != "x86_64":
        pytest.skip("capget's number here is x86_64's")
    body = ("import ctypes\nheader = (ctypes.c_uint32 * 2)(0x20080522, 0)\ndata = (ctypes.c_uint32 * 6)()\n"
            "assert ctypes.CDLL(None).syscall(125, header, data) == 0\nreturn list(data)")
    assert run(ex, body) == [0] * 6


def test_the_fallback_view_still_keeps_writes_off_the_host_and_can_be_refused(ex, python):
    needs_minimal_root(ex)  # only where it could be had, so that turning it off is what is tested
    wide = Executor(timeout_s=5.0, python=python[0], minimal_root=False)
    try:
        layers = wide.start()
        assert not layers["minimal_root"] and layers["mount_namespace"]
        assert wide.why["minimal_root"] == "turned off by the executor"
        token = f"arcsynth-sandbox-test-{uuid.uuid4().hex}"
        targets = [f"/run/lock/{token}", f"/var/tmp/{token}", f"/dev/shm/{token}", f"/tmp/{token}"]
        body = (f"for path in {targets!r}:\n    try:\n        open(path, 'w').write('x')\n    except OSError:\n"
                "        pass\nreturn 0")
        assert run(wide, body) == 0
        assert not [p for p in targets if os.path.exists(p)]
        assert run(wide, "return os.listdir('/proc')") == []  # no process of the host to reach
    finally:
        wide.close()
    refused = Executor(python=python[0], minimal_root=False, require=["minimal_root"])
    with pytest.raises(IsolationUnavailable, match=r"unavailable here: minimal_root \(active: .*; "
                                                   r"minimal_root: turned off by the executor\)"):
        refused.start()


def test_a_rootless_fallback_view_shows_runs_no_process_memory(tmp_path):
    """A rootless helper's runs keep its user and are dumpable: with the host's /proc in the fallback
    view, a run opened the spawner's /proc/PID/mem for writing (and so could have rewritten what later
    runs are forked from), or the worker's. The fallback view's /proc is empty."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root to start a helper as another user (setpriv)")
    wrapper = tmp_path / "python-as-nobody"
    wrapper.write_text(f'#!/bin/sh\nexec setpriv --reuid 65534 --regid 65534 --clear-groups {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    tmp_path.chmod(0o755)
    wide = Executor(timeout_s=10.0, python=str(wrapper), minimal_root=False)
    try:
        try:
            layers = wide.start()
        except IsolationUnavailable as exc:
            pytest.skip(f"no rootless helper here: {exc}")
        if not layers["mount_namespace"] or layers["unprivileged_user"]:
            pytest.skip("the fallback view needs a mount namespace, and the helper must be rootless")
        body = ("opened = []\nfor pid in (os.getppid(), os.getpid()):\n    try:\n"
                "        open(f'/proc/{pid}/mem', 'r+b').close()\n        opened.append(pid)\n"
                "    except OSError:\n        pass\nreturn [opened, os.listdir('/proc')]")
        assert run(wide, body) == [[], []]
    finally:
        wide.close()


READ_ONLY_TREE = """import errno, os, sys
sys.path.insert(0, {sandbox!r})
import sandbox_isolation as iso, sandbox_rootfs as rootfs
folder = {folder!r}
if not iso._user_namespace():
    print('"no user namespace"')
    sys.exit(0)
rootfs.mount(None, "/", None, rootfs.MS_REC | rootfs.MS_PRIVATE)
os.mkdir(folder + "/nested")
rootfs.mount("tmpfs", folder + "/nested", "tmpfs", rootfs.MS_NOSUID | rootfs.MS_NOATIME, "size=64k")
if {remount!r}:
    iso._MOUNT_SETATTR = 0x7FFFFFF  # no such call (ENOSYS), as on a kernel before 5.12
iso._read_only_tree()
found = []
for target in (folder + "/file", folder + "/nested/file"):
    try:
        open(target, "w").close()
        found.append("written")
    except OSError as exc:
        found.append(errno.errorcode[exc.errno])
print(repr([found, sorted(os.listdir(folder))]).replace("'", '"'))
"""


@pytest.mark.parametrize("user", ["root", "nobody"])
@pytest.mark.parametrize("remount", [False, True], ids=["mount_setattr", "remount-each-mount"])
def test_the_fallback_views_tree_is_read_only_with_or_without_mount_setattr(user, remount):
    """The fallback view makes the host's tree read-only with mount_setattr(2) (Linux 5.12+), else by a
    read-only bind remount of every mount point, keeping the flags a user namespace locks (here a nested
    tmpfs with nosuid and noatime). Both ways, as root and rootless: nothing under a folder the helper's
    user owns can be written, on its own mount or on one nested in it."""
    if user == "nobody" and (os.geteuid() != 0 or not shutil.which("setpriv")):
        pytest.skip("needs root to run as another user (setpriv)")
    folder = tempfile.mkdtemp(prefix="arcsynth-read-only-")
    try:
        command = [sys.executable, "-I", "-c", READ_ONLY_TREE.format(
            sandbox=str(REPO / "workers" / "sandbox"), folder=folder, remount=remount)]
        if user == "nobody":
            os.chown(folder, 65534, 65534)
            command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        if answer == "no user namespace":
            pytest.skip("no user namespace here")
        assert answer == [["EROFS", "EROFS"], ["nested"]]
    finally:
        shutil.rmtree(folder)
