"""Chaos: a whole run through a real cluster while workers, Redis and the producer are killed under it.

The replay backend serves fixed programs (a flip, a transpose and a slowed identity per task), so
every task's answer is known in advance. First an undisturbed run of the tasks gives the reference
submission; then the same tasks run again on the same cluster while a seeded schedule
- SIGKILLs a random worker (main process, or now and then one of its pool processes) every
  `--kill-every` seconds or so; a supervisor restarts it and puts its queue's unacknowledged
  jobs back at once (the job guard keeps a job that another live worker holds from running twice),
- restarts Redis once (append-only file, so queues and run state survive),
- SIGKILLs the producer once, then `arcsynth resume RUN` starts a new one.

At the end it checks that every task was scored exactly once (tasks.jsonl), that no candidate was
recorded twice (a candidate is keyed by its execute job id and index), that the submission is
identical to the undisturbed run's, and that no process it started (Redis, workers and their pool
and sandbox processes, producers) outlives it. It prints a table and, last,

    chaos tasks=<n> kills=<k> redis_restarts=<r> producer_restarts=<p> lost=<missing or scored twice> identical=<yes|no>

and exits 1 when anything was lost or scored twice, the submission differs, a candidate was
recorded twice or a process was orphaned.

    .venv/bin/python benchmarks/chaos.py [--tasks 500] [--seed 0] [--kill-every 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from arcsynth.common.celery_app import make_app  # noqa: E402
from arcsynth.common.data import load_tasks  # noqa: E402
from arcsynth.common.lifetime import pid_alive  # noqa: E402
from arcsynth.common.settings import Settings  # noqa: E402
from arcsynth.common.supervise import Supervisor  # noqa: E402
from arcsynth.producer.cluster import start_worker, wait_ready, worker_name  # noqa: E402
from arcsynth.producer.redis_server import RedisServer  # noqa: E402

DATASET = "arc-agi-2/training"  # 1000 tasks, test outputs known
FLIP = "def transform(grid):\n    return grid[::-1, ::-1]"
TRANSPOSE = "def transform(grid):\n    return grid.T"
# Sleeps once per run (one process runs a program over all of a task's inputs), then answers unchanged.
SLOWED = ("import time\n_slept = []\n\ndef transform(grid):\n    if not _slept:\n"
          "        _slept.append(time.sleep({s}))\n    return grid")
KINDS = ("execute", "inference")
TERMINAL = ("done", "cancelled")
ARCSYNTH = [sys.executable, "-m", "arcsynth.producer"]


class ChaosError(RuntimeError):
    """The run could not be driven to its end (a producer that died on its own, a run that never ends)."""


def programs(task_ms: int) -> list[str]:
    """The fixed programs every task gets, in sampling order."""
    return [FLIP, TRANSPOSE, SLOWED.format(s=task_ms / 1000)]


def write_replay(path: Path, task_ids: list[str], task_ms: int) -> None:
    """A replay file answering every task with `programs(task_ms)`."""
    with open(path, "w") as f:
        for tid in task_ids:
            for code in programs(task_ms):
                f.write(json.dumps({"task_id": tid, "text": f"```python\n{code}\n```"}) + "\n")


def worker_env(replay: Path, work: Path) -> dict[str, str]:
    """Settings for the workers and the producer: replay backend, fast redelivery, lenient poison limit.

    A job is failed as poison after its worker died during each of `max_job_attempts` attempts; random
    kills could hit one job three times, which is not what this run is about, so it gets 6."""
    return {"ARCSYNTH_BACKEND": "replay", "ARCSYNTH_REPLAY_FILE": str(replay), "ARCSYNTH_EXEC_TIMEOUT_S": "20",
            "ARCSYNTH_ARTIFACT_ROOT": str(work / "artifacts"), "ARCSYNTH_VISIBILITY_TIMEOUT_S": "20",
            "ARCSYNTH_REDELIVERY_CHECK_S": "1", "ARCSYNTH_MAX_JOB_ATTEMPTS": "6", "ARCSYNTH_JOB_LEASE_S": "6"}


# --- processes --------------------------------------------------------------------------------------


class Seen:
    """Every process this run started, directly or below one it started (sampled, so very short-lived
    grandchildren such as single sandbox runs may be missed; they die with their parents)."""

    def __init__(self) -> None:
        self.procs: dict[tuple[int, float], psutil.Process] = {}

    def add(self, pid: int | None, descendants: bool = True) -> None:
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            family = [proc, *(proc.children(recursive=True) if descendants else [])]
        except psutil.NoSuchProcess:
            return
        for p in family:
            try:
                self.procs.setdefault((p.pid, p.create_time()), p)
            except psutil.NoSuchProcess:
                continue

    def survivors(self, timeout: float) -> list[psutil.Process]:
        """Those still alive (zombies aside) after waiting up to `timeout` s for them to go; they are killed."""
        _, alive = psutil.wait_procs(list(self.procs.values()), timeout=timeout)
        alive = [p for p in alive if _really_alive(p)]
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        return alive


def _really_alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def requeue_kind(app, kind: str) -> int:
    """Put every unacknowledged job of `kind`'s queues (`execute`; `inference.<model>`) back at the
    head of its queue. Two workers share each queue here, so this also re-sends jobs the live one
    holds: their second delivery waits on the job's lease and then skips it (workers/guard.py)."""
    from arcsynth.producer.cluster import requeue_unacked

    return requeue_unacked(app, kind, prefix=True)


class ChaosCluster:
    """A private append-only Redis and `per_kind` supervised workers of each of `KINDS`.

    A worker that exits is restarted after a short backoff, never given up on; its kind's
    unacknowledged jobs go back on their queue at once. `seen` records every process started."""

    def __init__(self, env: dict[str, str], log_dir: Path, per_kind: int = 2, say: Callable[[str], None] | None = None) -> None:
        self.extra_env, self.log_dir, self.per_kind = env, log_dir, per_kind
        self.redis = RedisServer(appendonly=True)
        self.seen = Seen()
        self.notes: list[str] = []
        self.say = say or self.notes.append
        self.supervisor = Supervisor(max_restarts=10**6, window_s=60.0, backoff_s=0.3, max_backoff_s=1.0,
                                     on_exit=self._exited, say=self.say)
        self.env: dict[str, str] = {}
        self.app = None

    @property
    def names(self) -> list[str]:
        return [worker_name(kind, i) for kind in KINDS for i in range(1, self.per_kind + 1)]

    def start(self, ready_timeout: float = 180.0) -> ChaosCluster:
        """Start Redis and every worker; return once each answers a ping."""
        from pydantic import SecretStr

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.seen.add(self.redis.proc.pid)
        self.env = {**os.environ, "ARCSYNTH_BROKER_URL": self.redis.url, "ARCSYNTH_RESULT_BACKEND": self.redis.url,
                    "ARCSYNTH_MODEL": "replay", **self.extra_env}
        url = SecretStr(self.redis.url)
        self.app = make_app(Settings().model_copy(update={"broker_url": url, "result_backend": url}))
        logs = {}
        for kind in KINDS:
            for i in range(1, self.per_kind + 1):
                name, log = worker_name(kind, i), self.log_dir / f"{kind}-{i}.log"
                logs[name] = log
                self.supervisor.add(name, self._starter(kind, i, log), log)
        self.supervisor.watch()
        wait_ready(self.app, self.supervisor.procs, logs, ready_timeout, self.supervisor)
        self.record()
        return self

    def _starter(self, kind: str, index: int, log: Path) -> Callable[[], subprocess.Popen[bytes]]:
        def start() -> subprocess.Popen[bytes]:
            proc = start_worker(kind, self.env, log, ["--concurrency", "2"], index=index)
            self.seen.add(proc.pid, descendants=False)
            return proc
        return start

    def _exited(self, name: str, code: int) -> None:
        moved = requeue_kind(self.app, name.split("-", 1)[0])
        self.say(f"{name} exited ({code}); {moved} job(s) of its queue put back")

    def record(self) -> None:
        """Note the current processes (and their pool and sandbox processes) as started by this run."""
        self.seen.add(self.redis.proc.pid if self.redis.proc else None)
        for proc in list(self.supervisor.procs.values()):
            self.seen.add(proc.pid)

    def live(self) -> dict[str, subprocess.Popen[bytes]]:
        return {n: p for n, p in sorted(self.supervisor.procs.items()) if p.poll() is None}

    def kill_random(self, rng: random.Random) -> str | None:
        """SIGKILL one live worker (1 in 3 times one of its pool processes, if it has any); what was killed."""
        live = self.live()
        if not live:
            return None
        name = rng.choice(sorted(live))
        pool_kill = rng.random() < 1 / 3
        self.record()
        try:
            target = psutil.Process(live[name].pid)
            children = target.children() if pool_kill else []
            victim = rng.choice(children) if children else target
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            return None
        return f"{name} {'pool process' if victim is not target else 'main'} pid {victim.pid}"

    def restart_redis(self) -> None:
        """Stop Redis (it flushes its append-only file) and start it again on the same port."""
        self.redis.restart()
        self.seen.add(self.redis.proc.pid)

    def stop(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a grace period) and Redis."""
        self.record()
        self.supervisor.stop(grace_s=20.0)
        self.redis.stop()

    def __enter__(self) -> ChaosCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the run ----------------------------------------------------------------------------------------


@dataclass
class Events:
    """What the schedule did, in order, with seconds since the run started."""

    t0: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, what: str, detail: str) -> None:
        self.rows.append((time.monotonic() - self.t0, what, detail))

    def count(self, what: str) -> int:
        return sum(1 for _, w, _ in self.rows if w == what)


def submit(cluster: ChaosCluster, task_ids: list[str], samples: int, out: Path, max_active: int) -> tuple[str, int]:
    """`arcsynth submit` the tasks; the run id and its producer's pid."""
    r = subprocess.run([*ARCSYNTH, "submit", DATASET, "--tasks", ",".join(task_ids), "--samples", str(samples),
                        "--max-active", str(max_active), "--out", str(out)],
                       env=cluster.env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise ChaosError(f"submit failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout.split()[-1], _pid_in(r.stderr)


def resume(cluster: ChaosCluster, run_id: str) -> int:
    """`arcsynth resume RUN`; the new producer's pid."""
    r = subprocess.run([*ARCSYNTH, "resume", run_id], env=cluster.env, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise ChaosError(f"resume failed ({r.returncode}): {r.stderr[-2000:]}")
    return _pid_in(r.stdout)


def _pid_in(text: str) -> int:
    found = re.search(r"producer pid (\d+)", text)
    if not found:
        raise ChaosError(f"no producer pid in: {text[-500:]}")
    return int(found.group(1))


def run_state(cluster: ChaosCluster, run_id: str) -> str | None:
    """The run's state in Redis, or None while Redis cannot be reached."""
    try:
        client = redis.Redis.from_url(cluster.redis.url, decode_responses=True, socket_timeout=2, socket_connect_timeout=1)
        try:
            return client.hget(f"arcsynth:run:{run_id}", "state")
        finally:
            client.close()
    except redis.RedisError:
        return None


def scored(out: Path) -> int:
    """Lines in tasks.jsonl so far."""
    try:
        with open(out / "tasks.jsonl") as f:
            return sum(1 for line in f if line.endswith("\n"))
    except OSError:
        return 0


def kill_producer(pid: int, timeout: float = 30.0) -> None:
    """SIGKILL the producer and wait until it is gone (reaped by whoever adopted it)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise ChaosError(f"producer {pid} still alive {timeout:.0f} s after SIGKILL")
        time.sleep(0.05)


@dataclass
class Schedule:
    """The seeded disturbances of one run: worker kills every `kill_every` s (0.5x to 1.5x), Redis
    restarted once and the producer killed once, each when a seeded fraction of the tasks is scored."""

    rng: random.Random
    kill_every: float
    redis_at: float
    producer_at: float
    next_kill: float = 0.0

    @classmethod
    def seeded(cls, seed: int, kill_every: float) -> Schedule:
        rng = random.Random(seed)
        s = cls(rng, kill_every, redis_at=rng.uniform(0.2, 0.4), producer_at=rng.uniform(0.5, 0.7))
        s.next_kill = s.gap()
        return s

    def gap(self) -> float:
        return self.kill_every * self.rng.uniform(0.5, 1.5)


def drive(cluster: ChaosCluster, run_id: str, producer: int, out: Path, total: int, schedule: Schedule | None,
          events: Events, timeout: float, stall_s: float = 90.0) -> tuple[list[int], str]:
    """Follow the run to its end, disturbing it as `schedule` says (None: undisturbed).

    Returns every producer pid and, when the run stopped progressing for `stall_s` (or passed `timeout`),
    a note saying where each unfinished task's job is (the run is then left unfinished)."""
    producers = [producer]
    cluster.seen.add(producer)
    redis_done = producer_done = schedule is None
    deadline = time.monotonic() + timeout
    progress, progressed_at = -1, time.monotonic()
    while run_state(cluster, run_id) not in TERMINAL:
        now_s = time.monotonic()
        if scored(out) != progress:
            progress, progressed_at = scored(out), now_s
        if now_s > deadline or now_s - progressed_at > stall_s:
            return producers, f"run stalled at {progress}/{total} scored: " + where_jobs_are(cluster, run_id)
        cluster.record()
        cluster.seen.add(producers[-1])
        if not pid_alive(producers[-1]) and run_state(cluster, run_id) not in TERMINAL:
            raise ChaosError(f"producer {producers[-1]} exited on its own: {_tail(out / 'producer.log')}")
        time.sleep(0.2)
        if schedule is None:
            continue
        done = scored(out) / total
        now = time.monotonic() - events.t0
        if now >= schedule.next_kill:
            what = cluster.kill_random(schedule.rng)
            if what:
                events.add("kill", what)
            schedule.next_kill = now + schedule.gap()
        if not redis_done and done >= schedule.redis_at:
            cluster.restart_redis()
            events.add("redis restart", f"at {scored(out)}/{total} scored, pid {cluster.redis.proc.pid}")
            redis_done = True
        elif redis_done and not producer_done and done >= schedule.producer_at:
            kill_producer(producers[-1])
            producers.append(resume(cluster, run_id))
            cluster.seen.add(producers[-1])
            events.add("producer restart", f"at {scored(out)}/{total} scored, pid {producers[-2]} -> {producers[-1]}")
            producer_done = True
    _wait_gone(producers[-1], 60.0)
    return producers, ""


def where_jobs_are(cluster: ChaosCluster, run_id: str) -> str:
    """For each task the run still waits on, where each of its job's messages is: `queued`, `unacked`
    (taken by a worker), `running`/`done` (its lease), `result` (stored), or `nowhere` (lost by the broker)."""
    r = redis.Redis.from_url(cluster.redis.url, decode_responses=True)
    try:
        jobs = {tid: json.loads(raw) for tid, raw in r.hgetall(f"arcsynth:run:{run_id}:jobs").items()}
        messages = Counter()
        for key in r.scan_iter(count=1000):
            if r.type(key) == "list":
                messages.update(_message_id(m) + ":queued" for m in r.lrange(key, 0, -1))
        messages.update(_message_id(json.loads(v)[0]) + ":unacked" for v in r.hvals("unacked"))
        notes = []
        for tid, job in sorted(jobs.items()):
            where = []
            for job_id in job.get("ids", []):
                lease = r.get(f"arcsynth:lease:{job_id}")
                places = [p for p in ("queued", "unacked") if messages[f"{job_id}:{p}"]]
                places += [] if lease is None else ["done" if lease == "done" else "running"]
                places += ["result"] if r.exists(f"celery-task-meta-{job_id}") else []
                where.append(f"{job_id[:8]}={'+'.join(places) or 'nowhere'}")
            notes.append(f"{tid} (sent={job.get('sent')}) {' '.join(where)}")
        return "; ".join(notes) or "no job recorded"
    finally:
        r.close()


def _message_id(raw: str | dict) -> str:
    message = json.loads(raw) if isinstance(raw, str) else raw
    try:
        return message["headers"]["id"]
    except (KeyError, TypeError):
        return "?"


def _wait_gone(pid: int, timeout: float) -> None:
    """The producer exits by itself once its run ended."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-1500:]
    except OSError:
        return "(no log)"


# --- checks -----------------------------------------------------------------------------------------


@dataclass
class RunCheck:
    """What one run directory holds: tasks scored (and how often), candidates and their duplicates."""

    name: str
    tasks: int
    scored: Counter[str]
    statuses: Counter[str]
    candidates: int
    duplicate_candidates: int
    score: float | None
    seconds: float
    submission: dict

    @property
    def missing(self) -> int:
        return self.tasks - len(self.scored)

    @property
    def twice(self) -> int:
        return sum(1 for n in self.scored.values() if n > 1)

    @property
    def lost(self) -> int:
        return self.missing + self.twice


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def check_run(name: str, out: Path, task_ids: list[str], seconds: float) -> RunCheck:
    """Read back a finished run directory."""
    records = list(_jsonl(out / "tasks.jsonl"))
    keys = Counter((c["job"], c["index"]) for c in _jsonl(out / "candidates.jsonl"))
    score_file = out / "score.json"
    score = json.loads(score_file.read_text()).get("score") if score_file.exists() else None
    submission_file = out / "submission.json"  # absent when the run never ended
    submission = json.loads(submission_file.read_text()) if submission_file.exists() else {}
    ours = set(task_ids)
    scored_ids = Counter(r["task_id"] for r in records if r["task_id"] in ours)
    return RunCheck(name, len(task_ids), scored_ids, Counter(r["status"] for r in records), sum(keys.values()),
                    sum(n - 1 for n in keys.values()), score, seconds, submission)


# --- report -----------------------------------------------------------------------------------------


@dataclass
class Report:
    tasks: int
    reference: RunCheck
    chaos: RunCheck
    events: Events
    producer_restarts: int
    orphans: list[str]
    stalled: str = ""  # where the unfinished tasks' jobs were, when the disturbed run stopped progressing

    @property
    def identical(self) -> bool:
        return self.chaos.submission == self.reference.submission

    @property
    def ok(self) -> bool:
        return (self.chaos.lost == 0 and self.reference.lost == 0 and self.identical and not self.orphans
                and self.chaos.duplicate_candidates == 0 and not self.stalled)

    def last_line(self) -> str:
        return (f"chaos tasks={self.tasks} kills={self.events.count('kill')} "
                f"redis_restarts={self.events.count('redis restart')} producer_restarts={self.producer_restarts} "
                f"lost={self.chaos.lost} identical={'yes' if self.identical else 'no'}")

    def table(self) -> str:
        lines = [f"{'run':<10} {'tasks':>6} {'scored':>7} {'missing':>8} {'twice':>6} {'statuses':<22} "
                 f"{'candidates':>11} {'dup cands':>10} {'score':>7} {'seconds':>8}"]
        for c in (self.reference, self.chaos):
            statuses = ",".join(f"{k}:{v}" for k, v in sorted(c.statuses.items()))
            score = f"{c.score:.3f}" if c.score is not None else "-"
            lines.append(f"{c.name:<10} {c.tasks:>6} {sum(c.scored.values()):>7} {c.missing:>8} {c.twice:>6} "
                         f"{statuses:<22} {c.candidates:>11} {c.duplicate_candidates:>10} {score:>7} {c.seconds:>8.1f}")
        lines.append("")
        lines.append(f"{'t (s)':>7}  {'event':<17} detail")
        lines += [f"{t:>7.1f}  {what:<17} {detail}" for t, what, detail in self.events.rows]
        lines.append("")
        lines.append(f"orphaned processes: {len(self.orphans)}" + (f" ({'; '.join(self.orphans)})" if self.orphans else ""))
        if self.stalled:
            lines.append(self.stalled)
        return "\n".join(lines)


def run_chaos(tasks: int = 500, seed: int = 0, kill_every: float = 3.0, task_ms: int = 100, max_active: int = 16,
              work: Path | None = None, timeout: float = 900.0, stall_s: float = 90.0) -> Report:
    """The reference run, then the disturbed one, on one cluster; every process started is gone on return.

    A disturbed run that scores nothing for `stall_s` seconds (or runs past `timeout`) is given up:
    the report then says where its unfinished tasks' jobs were."""
    work = work or Path(tempfile.mkdtemp(prefix="arcsynth-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    task_ids = [t.id for t in load_tasks(DATASET, limit=tasks)]
    replay = work / "programs.jsonl"
    write_replay(replay, task_ids, task_ms)
    samples = len(programs(task_ms))
    cluster = ChaosCluster(worker_env(replay, work), work / "logs")
    producers: list[int] = []
    try:
        cluster.start()
        ref_out, t0 = work / "reference", time.monotonic()
        run_id, pid = submit(cluster, task_ids, samples, ref_out, max_active)
        started, stalled = drive(cluster, run_id, pid, ref_out, tasks, None, Events(), timeout, stall_s)
        producers += started
        if stalled:
            raise ChaosError(f"the undisturbed run did not finish: {stalled}")
        reference = check_run("reference", ref_out, task_ids, time.monotonic() - t0)
        chaos_out = work / "chaos"
        events = Events()
        run_id, pid = submit(cluster, task_ids, samples, chaos_out, max_active)
        restarted, stalled = drive(cluster, run_id, pid, chaos_out, tasks, Schedule.seeded(seed, kill_every), events,
                                   timeout, stall_s)
        producers += restarted
        chaos = check_run("chaos", chaos_out, task_ids, time.monotonic() - events.t0)
    finally:
        for pid in producers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        cluster.stop()
    orphans = [f"{p.pid} {' '.join(_cmdline(p))[:80]}" for p in cluster.seen.survivors(timeout=30.0)]
    return Report(tasks, reference, chaos, events, len(restarted) - 1, orphans, stalled)


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that `finally` stops everything this run started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-every", type=float, default=3.0, help="seconds between worker kills, on average")
    ap.add_argument("--task-ms", type=int, default=100, help="how long each task's slowed program sleeps")
    ap.add_argument("--max-active", type=int, default=16, help="tasks the producer keeps in flight")
    ap.add_argument("--stall-s", type=float, default=90.0, help="give up on a run that scores nothing this long")
    ap.add_argument("--work", type=Path, help="folder for the runs and logs (default: a new temporary one)")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    report = run_chaos(args.tasks, args.seed, args.kill_every, args.task_ms, args.max_active, args.work,
                        stall_s=args.stall_s)
    print(report.table())
    print(report.last_line(), flush=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
