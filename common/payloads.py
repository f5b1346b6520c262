"""Large job outputs travel by reference: the execute worker writes a job's candidates to shared
artifact storage (a folder or any fsspec URL) and its Celery result only names the file, so Redis
never holds candidate payloads. The producer reads the file once and deletes it."""

from __future__ import annotations

import os

import fsspec

from arcsynth.common.models import Candidate


def payload_url(artifact_root: str, job_id: str) -> str:
    root = artifact_root if "://" in artifact_root else os.path.abspath(artifact_root)
    return f"{root.rstrip('/')}/payloads/{job_id}.jsonl"


def store_candidates(url: str, candidates: list[Candidate]) -> None:
    """Write to a temporary name, then rename: a reader never sees half a file."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path + ".part", "w") as f:
        f.writelines(c.model_dump_json() + "\n" for c in candidates)
    fs.mv(path + ".part", path)


def load_candidates(url: str) -> list[Candidate]:
    fs, path = fsspec.core.url_to_fs(url)
    with fs.open(path, "r") as f:
        return [Candidate.model_validate_json(line) for line in f if line.strip()]


def drop(url: str) -> None:
    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path):
        fs.rm(path)
