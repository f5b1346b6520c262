"""Settings from the environment (`ARCSYNTH_…`) and `.env`; nothing about hosts is hard-coded.

Read once per process — by the CLI at its entry, by a worker at its start — and passed down;
nothing else constructs `Settings` or reads `ARCSYNTH_…` variables, except `ARCSYNTH_MODEL_CACHE`:
where prepared models live, read where a model name is resolved (like `HF_HOME`)."""

from __future__ import annotations

import difflib
import os
import re
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from arcsynth.common.models import DEFAULT_MAX_TOKENS, MAX_TEMPERATURE, MAX_TOKENS, Text

ENV_FILE = ".env"  # read from the working directory (checked line by line first: common/env_file.py)
# The isolation layers an execute worker reports (workers/sandbox/sandbox_isolation.py), for ARCSYNTH_EXEC_REQUIRE.
EXEC_LAYERS = ("network_namespace", "mount_namespace", "minimal_root", "seccomp", "unprivileged_user", "rlimits")


class Settings(BaseSettings):
    """Every setting, validated: a value out of its range, NaN or infinity is refused with its name."""

    model_config = SettingsConfigDict(env_prefix="ARCSYNTH_", env_file=ENV_FILE, extra="ignore", allow_inf_nan=False)

    # Queue. Empty broker URL: `arcsynth local` starts a private Redis; other commands refuse.
    # A Redis URL (redis://, rediss://, unix://), checked when read: the producer and workers talk to it directly.
    broker_url: SecretStr | None = None
    result_backend: SecretStr | None = None
    result_expires_s: int = Field(7 * 24 * 3600, ge=60, le=365 * 24 * 3600)

    # Model and engine. Backends: vllm (default), transformers, openai (any compatible endpoint), replay.
    backend: Literal["vllm", "transformers", "openai", "replay"] = "vllm"
    model: Text = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
    replay_file: str = ""
    openai_base_url: str = ""
    openai_api_key: SecretStr | None = None
    openai_model: str = ""
    max_model_len: int = Field(8192, ge=256, le=1 << 20)
    gpu_memory_utilization: float | None = Field(None, gt=0.0, le=1.0)  # None: 0.9 GPU, 0.2 CPU
    enable_lora: bool = True
    max_lora_rank: int = Field(16, ge=1, le=512)
    # Adapters that share one batch on the device; None: 16 on a GPU, 4 on CPU. Each slot holds one
    # adapter of rank max_lora_rank (rank 16 on all linear layers of a 7B model: about 80 MB in bf16).
    max_loras: int | None = Field(None, ge=1, le=1024)
    max_cpu_loras: int | None = Field(None, ge=1, le=4096)  # None: 4 x max_loras kept in host memory
    dtype: str = "auto"
    # GPUs one vLLM engine spans by tensor parallelism (vLLM's tensor_parallel_size): a model too large for one
    # GPU. `arcsynth workers --tp N` and `arcsynth worker --gpus 0,1` set it per worker.
    tensor_parallel_size: int = Field(1, ge=1, le=64)

    # Sampling defaults (the CLI's options override them per run).
    temperature: float = Field(1.0, ge=0.0, le=MAX_TEMPERATURE)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    max_tokens: int = Field(DEFAULT_MAX_TOKENS, ge=1, le=MAX_TOKENS)

    # Execution limits for one candidate run (all inputs of its task): at most an hour, at most 1 TiB.
    exec_timeout_s: float = Field(5.0, gt=0, le=3600)
    exec_memory_mb: int = Field(1024, ge=64, le=1024 * 1024)
    # Comma-separated isolation layers an execute worker must have, or it refuses to start:
    # network_namespace, mount_namespace, minimal_root, seccomp, unprivileged_user, rlimits.
    exec_require: str = ""
    # Comma-separated paths of DSL modules programs may import by file name (`from common import *`).
    exec_dsl: str = ""
    # Comma-separated packages offered to programs besides numpy (e.g. `scipy` for BARC's common.py).
    exec_packages: str = ""
    # How candidate programs are isolated from each other: "run" gives every program its own forked,
    # confined process; "job" runs the distinct programs of one task in one confined process, one
    # after another, replaced whenever a program changed shared state, timed out or crashed. Use
    # "job" for re-scoring and large replay evaluations, not for live sampling of hostile code.
    exec_isolation: Literal["run", "job"] = "run"

    def exec_dsl_paths(self) -> list[str]:
        return [x.strip() for x in self.exec_dsl.split(",") if x.strip()]

    def exec_package_names(self) -> list[str]:
        return [x.strip() for x in self.exec_packages.split(",") if x.strip()]

    def exec_required_layers(self) -> list[str]:
        return [x.strip() for x in self.exec_require.split(",") if x.strip()]

    # Time limits per job kind (enforced for execute jobs only: see the README). A job taken by a
    # worker that died is handed out again once the broker's visibility timeout passes (default:
    # twice the longest limit), and workers look
    # for such jobs every `redelivery_check_s`. A job that outlasts the timeout is handed out too,
    # but its second delivery waits on the job's lease instead of running it twice at once.
    inference_time_limit_s: int = Field(3600, ge=10, le=7 * 86400)
    finetune_time_limit_s: int = Field(3600, ge=10, le=7 * 86400)
    execute_time_limit_s: int = Field(900, ge=10, le=7 * 86400)
    visibility_timeout_s: int | None = Field(None, ge=10, le=30 * 86400)
    redelivery_check_s: int = Field(10, ge=1, le=86400)
    # A running job's lease lapses this long after its worker died (then another may take it);
    # a job whose worker died during each of `max_job_attempts` attempts fails as a poison job.
    job_lease_s: int = Field(30, ge=3, le=86400)
    max_job_attempts: int = Field(3, ge=1, le=1000)
    # The producer looks for the messages of its jobs in flight this often; one found nowhere (queue, unacked,
    # lease, result) on two checks was lost by the broker and is sent again under its id (producer/lost_jobs.py).
    lost_job_check_s: float = Field(30.0, ge=1.0, le=86400)

    def longest_time_limit_s(self) -> int:
        return max(self.inference_time_limit_s, self.finetune_time_limit_s, self.execute_time_limit_s)

    def visibility_s(self) -> int:
        return self.visibility_timeout_s or 2 * self.longest_time_limit_s()

    # Flower: `user:password` (several separated by commas); `arcsynth flower` refuses to start without it.
    flower_basic_auth: SecretStr | None = None
    flower_port: int = Field(5555, ge=1, le=65535)

    # Base models a fine-tune worker keeps loaded between jobs (an LRU; each job attaches its own LoRA).
    finetune_resident_models: int = Field(1, ge=1, le=64)

    # Show a progress bar in `arcsynth local` even when stderr is not a terminal.
    progress: bool = False
    # `wait`, `submit/resume --wait` and `local` say on stderr when a queue the run needs has had no live
    # consumer (no worker answering that it consumes it) for this many seconds, and when it has one again.
    no_worker_warn_s: float = Field(60.0, ge=1.0, le=86400)

    # Where adapters and run directories go (their paths are written to JSON and Redis: UTF-8 only).
    artifact_root: Text = "artifacts"
    adapter_cache: str = Field(default_factory=lambda: os.path.expanduser("~/.cache/arcsynth/adapters"))
    run_root: Text = "runs"
    # Tasks a producer keeps in flight at once (bounds its memory and the queues' length).
    max_active_tasks: int = Field(64, ge=1, le=100_000)

    @field_validator("broker_url", "result_backend", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        """Empty is unset; anything else must be a URL redis-py takes (its scheme, port and query: the
        connection it would make is built, not opened), whose path is a database number, as Celery's
        Redis backend reads it (`redis://host/abc` was database 0 to redis-py and a crash in Celery)."""
        url = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(url, str) and not url.strip():
            return None
        if isinstance(url, str):
            from urllib.parse import urlsplit

            from redis import ConnectionPool, RedisError

            try:
                ConnectionPool.from_url(url).make_connection()
                path = urlsplit(url).path
            except (ValueError, TypeError, RedisError):  # a message may quote part of the password
                raise ValueError("not a Redis URL: want redis://, rediss:// or unix://, a numeric port, only query "
                                 "parameters redis-py takes, and / ? # @ in a password percent-encoded") from None
            if not url.startswith("unix://") and not re.fullmatch(r"/?[0-9]*", path):
                raise ValueError("not a Redis URL: the path after host:port must be a database number "
                                 "(redis://host:6379/0)")
        return value

    @field_validator("exec_require")
    @classmethod
    def _known_layers(cls, value: str) -> str:
        """A misspelt layer would pass for one the host lacks: every execute worker would refuse to start."""
        unknown = next((x.strip() for x in value.split(",") if x.strip() and x.strip() not in EXEC_LAYERS), None)
        if unknown is not None:
            raise ValueError(f"no isolation layer named {unknown!r} (layers: {', '.join(EXEC_LAYERS)})")
        return value

    @field_validator("model")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model name is empty")
        if not value.isprintable():
            raise ValueError("a model name holds a control character (a hub id or a path has none)")
        return value

    def broker(self) -> str:
        if self.broker_url is None:
            raise RuntimeError("ARCSYNTH_BROKER_URL is not set (or run `arcsynth local`)")
        return self.broker_url.get_secret_value()

    def result_backend_url(self) -> str:
        return self.result_backend.get_secret_value() if self.result_backend else self.broker()



# `ARCSYNTH_…` variables that are read but are not settings (see the module docstring).
OTHER_VARIABLES = frozenset({"ARCSYNTH_MODEL_CACHE"})


def unknown_variable(name: str) -> str | None:
    """For an `ARCSYNTH_…` name (any case, as the settings read them) that no setting has: a line saying
    so, with the nearest setting's name; None for a setting, an `OTHER_VARIABLES` name, or another name.
    A misspelt setting would otherwise be ignored without a word."""
    upper = name.upper()
    known = {f"ARCSYNTH_{field.upper()}" for field in Settings.model_fields} | OTHER_VARIABLES
    if not upper.startswith("ARCSYNTH_") or upper in known:
        return None
    near = difflib.get_close_matches(upper.removeprefix("ARCSYNTH_"), sorted(k.removeprefix("ARCSYNTH_") for k in known),
                                     n=1, cutoff=0.7)
    return f"{name} is not a setting" + (f" (did you mean ARCSYNTH_{near[0]}?)" if near else "")
