"""The result channel: whatever a program writes into it, or does to it, is that program's own verdict.

Each hostile program below writes into its run's result channel (descriptor 3), or breaks it, and
the executor must return one verdict per input without raising, keep serving, and grade the next
(correct) program exactly as if the hostile one had never run.
"""

from __future__ import annotations

import pytest

from arcsynth.common.models import Candidate, Completion, Task
from arcsynth.workers.sandbox.executor import Executor, parse_reply

TASK = Task(id="t", train=[{"input": [[1, 2]], "output": [[2, 1]]}, {"input": [[3, 4]], "output": [[4, 3]]}],
            test=[{"input": [[5, 6]]}])
FLIP = "def transform(grid):\n    return grid[:, ::-1]"


def forge(payload: str, then: str = "os._exit(0)") -> str:
    """A program whose transform writes `payload` (a bytes expression) to the channel, then does `then`."""
    return f"import os\ndef transform(grid):\n    os.write(3, {payload})\n    {then}"


# name: (program, verdicts of the three inputs, a fragment of the first input's message)
CHANNEL = {
    "colour_out_of_range": (forge("b'{\"output\": [[10]]}\\n'"), ["invalid_output", "crashed", "crashed"], "colour 10"),
    "negative_colour": (forge("b'{\"output\": [[-1]]}\\n'"), ["invalid_output", "crashed", "crashed"], "colour -1"),
    "ragged_grid": (forge("b'{\"output\": [[1, 2], [3]]}\\n'"), ["invalid_output", "crashed", "crashed"], "different"),
    "empty_grid": (forge("b'{\"output\": []}\\n'"), ["invalid_output", "crashed", "crashed"], "not a list"),
    "too_large_grid": (forge("('{\"output\": ' + str([[1] * 31] * 31) + '}\\n').encode()"),
                       ["invalid_output", "crashed", "crashed"], "1..30"),
    "float_cell": (forge("b'{\"output\": [[1.0]]}\\n'"), ["invalid_output", "crashed", "crashed"], "not an int"),
    "bool_cell": (forge("b'{\"output\": [[true]]}\\n'"), ["invalid_output", "crashed", "crashed"], "not an int"),
    "nan_cell": (forge("b'{\"output\": [[NaN]]}\\n'"), ["invalid_output", "crashed", "crashed"], "not an int"),
    "string_cell": (forge("b'{\"output\": [[\"1\"]]}\\n'"), ["invalid_output", "crashed", "crashed"], "not an int"),
    "unknown_key": (forge("b'{\"output\": [[1]], \"score\": 1}\\n'"), ["crashed"] * 3, "unknown key"),
    "only_unknown_key": (forge("b'{\"pwned\": 1}\\n'"), ["crashed"] * 3, "unknown key 'pwned'"),
    "json_array": (forge("b'[1, 2]\\n'"), ["crashed"] * 3, "JSON list, not an object"),
    "json_string": (forge("b'\"output\"\\n'"), ["crashed"] * 3, "JSON str, not an object"),
    "json_null": (forge("b'null\\n'"), ["crashed"] * 3, "JSON NoneType, not an object"),
    "json_number": (forge("b'7\\n'"), ["crashed"] * 3, "not an object"),
    "not_json": (forge("b'hello\\n'"), ["crashed"] * 3, "not JSON"),
    "empty_line": (forge("b'\\n'"), ["crashed"] * 3, "not JSON"),
    "binary_junk": (forge("bytes(range(128, 256)) + b'\\n'"), ["crashed"] * 3, "not UTF-8"),
    "control_bytes": (forge("bytes(range(10)) + b'\\n'"), ["crashed"] * 3, "not JSON"),
    "deeply_nested": (forge("b'{\"output\": ' + b'[' * 20000 + b']' * 20000 + b'}\\n'"), ["crashed"] * 3, "not JSON"),
    "huge_integer": (forge("b'{\"output\": [[' + b'9' * 5000 + b']]}\\n'"), ["crashed"] * 3, "not JSON"),
    "huge_line": (forge("b'{\"output\": \"' + b'x' * 100000 + b'\"}\\n'"), ["crashed"] * 3, "a line of 100014 bytes"),
    "long_legal_line": (forge("b'{\"error\": \"exception\", \"message\": \"' + b'y' * 60000 + b'\"}\\n'"),
                        ["exception", "crashed", "crashed"], "yyy"),
    "endless_line": ("import os\ndef transform(grid):\n    while True:\n        os.write(3, b'x' * 65536)",
                     ["crashed"] * 3, "flooded"),
    "endless_lines": ("import os\ndef transform(grid):\n    while True:\n        os.write(3, b'{\"output\": [[1]]}\\n' * 4096)",
                      ["none"] * 3, ""),
    "unterminated_junk": (forge("b'{\"output\": [[1]]'", "return grid[:, ::-1]"), ["crashed"] * 3, "not JSON"),
    "unknown_verdict": (forge("b'{\"error\": \"none\", \"message\": \"\"}\\n'"), ["crashed"] * 3, "unknown verdict"),
    "helper_only_verdict": (forge("b'{\"error\": \"timeout\", \"message\": \"\"}\\n'"), ["crashed"] * 3, "unknown verdict"),
    "message_not_a_string": (forge("b'{\"error\": \"exception\", \"message\": [1]}\\n'"), ["crashed"] * 3,
                             "not a string"),
    "misplaced_load_flag": (forge("b'{\"output\": [[1]]}\\n{\"error\": \"exception\", \"message\": \"x\", \"load\": true}\\n'"),
                            ["none", "crashed", "crashed"], ""),
    "load_flag_not_true": (forge("b'{\"error\": \"exception\", \"message\": \"x\", \"load\": 1}\\n'"), ["crashed"] * 3,
                           "load flag"),
    "forged_load_failure": (forge("b'{\"error\": \"exception\", \"message\": \"forged\", \"load\": true}\\n'"),
                            ["exception"] * 3, "forged"),
    "close_channel": ("import os\ndef transform(grid):\n    os.close(3)\n    return grid", ["crashed"] * 3,
                      "could not report"),
    "close_channel_then_loop": ("import os\ndef transform(grid):\n    os.close(3)\n    while True: pass",
                                ["timeout"] * 3, "no result within"),
    "channel_replaced_by_devnull": ("import os\nos.dup2(os.open(os.devnull, os.O_WRONLY), 3)\n"
                                    "def transform(grid):\n    return grid", ["crashed"] * 3, "ended the process"),
    "channel_made_stdout": ("import os\nos.dup2(1, 3)\ndef transform(grid):\n    return grid", ["crashed"] * 3,
                            "ended the process"),
    "json_dumps_replaced": ("import json\njson.dumps = lambda *a, **k: '[1]'\ndef transform(grid):\n    return grid",
                            ["crashed"] * 3, "not an object"),
    "partial_line_then_timeout": (forge("b'{\"output\": [[1]]'", "while True: pass"), ["timeout"] * 3, "no result"),
    "junk_on_stdout_and_stderr": ("import os\ndef transform(grid):\n    os.write(1, b'{\"results\": 5}\\n')\n"
                                  "    os.write(2, b'\\x00\\xff\\n')\n    return grid[:, ::-1]", ["none"] * 3, ""),
    "surrogate_in_message": ("def transform(grid):\n    raise ValueError('\\ud800 lone')", ["exception"] * 3, "? lone"),
    "unprintable_exception": ("class E(Exception):\n    def __str__(self):\n        raise RuntimeError\n"
                              "def transform(grid):\n    raise E()", ["exception"] * 3, "cannot be printed"),
    "exception_str_is_huge": ("def transform(grid):\n    raise ValueError('x' * 10**6)", ["exception"] * 3, "xxx"),
}


@pytest.fixture(scope="module", params=["run", "job"])
def ex(request):
    """An executor in each isolation mode: in "job" mode each grade is a one-program job process."""
    e = Executor(timeout_s=2.0, memory_mb=512, isolation=request.param)
    e.start()
    yield e
    e.close()


@pytest.mark.parametrize("name", sorted(CHANNEL))
def test_whatever_reaches_the_channel_is_the_runs_own_verdict(ex, name):
    code, errors, message = CHANNEL[name]
    r = ex.grade(TASK, code)
    assert [x.error for x in r.train + r.test] == errors, [x.message for x in r.train + r.test]
    assert message in r.train[0].message
    assert all(len(x.message) <= 500 for x in r.train + r.test)
    # What the job does next with the verdicts must not fail either: records are written as JSON.
    Candidate(task_id="t", index=0, code=code, completion=Completion(text=code), execution=r).model_dump_json()
    assert ex.grade(TASK, FLIP).all_train_correct


def test_a_run_holds_only_its_four_descriptors(ex):
    """0 is /dev/null, 1 and 2 its captured output, 3 its channel: not the helper's pipes, nothing else."""
    code = ("import os\ndef is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n"
            "    except OSError:\n        return False\n"
            "def transform(grid):\n    assert os.read(0, 10) == b''\n"
            "    return [[fd for fd in range(1024) if is_open(fd)]]")
    r = ex.grade(TASK, code)
    assert [x.output for x in r.test] == [[[0, 1, 2, 3]]], r.test[0].message


def test_forged_results_count_for_as_many_inputs_as_there_are(ex):
    code = "import os\nos.write(3, b'{\"output\": [[7]]}\\n' * 50)\ndef transform(grid):\n    return grid"
    r = ex.grade(TASK, code)
    assert [x.output for x in r.train + r.test] == [[[7]]] * 3 and r.train_correct == 0


def test_a_replaced_output_is_neither_followed_nor_waited_on(ex):
    """The run's output is a memfd the helper reads: descriptors 1 and 2 pointed at a FIFO or a link do not matter."""
    for trick in ("os.mkfifo('out')", "os.symlink('/etc/ld.so.cache', 'out')"):
        code = (f"import os\n{trick}\nfd = os.open('out', os.O_RDWR | os.O_NONBLOCK)\nos.dup2(fd, 1)\nos.dup2(fd, 2)\n"
                "def transform(grid):\n    return grid[:, ::-1]")
        r = ex.grade(TASK, code)
        assert r.all_train_correct or "symlink" in trick, r.train[0].message
        assert ex.last_output == ""


def test_a_job_with_every_hostile_program_scores_its_correct_program_as_if_alone(ex):
    alone = ex.grade(TASK, FLIP)
    for code, _, _ in CHANNEL.values():
        ex.grade(TASK, code)
    beside = ex.grade(TASK, FLIP)
    assert beside.model_dump(exclude={"seconds"}) == alone.model_dump(exclude={"seconds"})


@pytest.mark.parametrize("line, verdicts", [
    ("", None),
    ("not json", None),
    ("[1, 2]", None),
    ('{"results": 5}', None),
    ('{"results": []}', ["crashed", "crashed"]),
    ('{"results": [{"output": [[10]]}, {"output": [[1]]}]}', ["crashed", "none"]),
    ('{"results": [{"output": [[1]], "error": "exception"}, 5]}', ["crashed", "crashed"]),
    ('{"results": [{"error": "none"}, {"error": "bogus"}]}', ["crashed", "crashed"]),
    ('{"results": [{"error": "exception", "message": "\\ud800"}], "seconds": "x", "output": 5}', ["exception", "crashed"]),
    ('{"results": [{"output": [[1]]}, {"output": [[2]]}, {"output": [[3]]}]}', ["none", "none"]),
])
def test_the_executor_validates_the_helpers_reply_too(line, verdicts):
    parsed = parse_reply(line, 2)
    if verdicts is None:
        assert parsed is None
        return
    results, seconds, output = parsed
    assert [r.error for r in results] == verdicts
    assert isinstance(seconds, float) and isinstance(output, str)
    for r in results:
        r.model_dump_json()

