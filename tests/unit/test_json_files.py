"""Small JSON files named by users or runs (adapter manifests, model configs) are read without
waiting on a FIFO or reading without end; each problem is one line naming the file."""

import os
import threading

import pytest

from arcsynth.common.json_file import MAX_BYTES, JsonFileError, read_json_object


def _within(seconds, fn, *args):
    """`fn(*args)`'s result or exception, or a failure when it has not returned in `seconds` (a FIFO)."""
    out = {}

    def call():
        try:
            out["value"] = fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} still waiting after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.mark.parametrize("kind, fragment", [("fifo", "not a regular file"), ("folder", "not a regular file"),
                                            ("huge", f"more than the {MAX_BYTES} allowed")])
def test_a_json_file_that_is_no_small_regular_file_is_named(tmp_path, kind, fragment):
    path = tmp_path / "arcsynth_manifest.json"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        with open(path, "wb") as f:
            f.truncate(MAX_BYTES + 1)  # sparse
    with pytest.raises(JsonFileError, match=f"arcsynth_manifest.json: (file is .* bytes, )?{fragment}"):
        _within(10, read_json_object, path)


def test_an_adapter_whose_manifest_is_a_fifo_has_no_training_time(tmp_path):
    """`report`, `compare` and `runs` read each adapter's training time; a FIFO there hung them."""
    from arcsynth.producer.summary import adapter_seconds

    os.mkfifo(tmp_path / "arcsynth_manifest.json")
    assert _within(10, adapter_seconds, str(tmp_path)) is None
    (tmp_path / "arcsynth_manifest.json").unlink()
    (tmp_path / "arcsynth_manifest.json").write_text('{"seconds": 12.5}')
    assert adapter_seconds(str(tmp_path)) == 12.5
