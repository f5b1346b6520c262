"""Which search-and-learn scheme to use: the same tasks at equal samples per task.

Six runs on one local cluster (one worker of each kind, the model loaded once): search only,
task-scope learning (the seed author's: one adapter per task per epoch) and run-scope learning
(SOAR's: one adapter per epoch trained on every task), each without and with REx refinement. A
run with E epochs splits its budget evenly over them; with REx, half of each epoch's budget goes
to one refinement round. Prints a table (solved tasks, score, samples, wall seconds, fine-tune
seconds per epoch) and a last line
`learning search=<score> task=<score> run=<score> samples_per_task=<n>` (the runs without REx).
`samples_per_task` is every scheme's budget; the table's `drawn/task` (programs recorded per task)
can be lower: an epoch with nothing to learn from, or a refinement round with no program to refine,
is not run, and its share of the budget is not spent elsewhere.

Smoke run here:  python benchmarks/learning.py --model smollm2 --limit 3 --samples 8 --max-tokens 256
On a GPU:        python benchmarks/learning.py --model Qwen/Qwen2.5-Coder-7B-Instruct \
                     --dataset arc-agi-1/evaluation --limit 400 --samples 512 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from arcsynth.common.models import LearnConfig, RunConfig, SamplingConfig, TrainConfig  # noqa: E402

SCHEMES = [("search", "task", False), ("search+rex", "task", True), ("task", "task", False),
           ("task+rex", "task", True), ("run", "run", False), ("run+rex", "run", True)]


def scheme_config(name: str, scope: str, rex: bool, args, task_ids: list[str]) -> RunConfig:
    epochs = 0 if name.startswith("search") else args.epochs
    per_epoch = max(1, args.samples // (epochs + 1))
    search_n = max(1, per_epoch // 2) if rex else per_epoch
    learn = LearnConfig(epochs=epochs, samples_per_epoch=search_n, scope=scope, base_model=args.model,
                        stop_after=None, select="diverse" if scope == "run" else "best",
                        refine_rounds=1 if rex else 0, refine_samples=max(1, per_epoch - search_n),
                        refine_strategy="rex", learn_from_refinements=rex and epochs > 0,
                        train=TrainConfig(steps=args.finetune_steps))
    sampling = SamplingConfig(n=search_n, temperature=1.0, min_p=args.min_p, max_tokens=args.max_tokens)
    return RunConfig(run_id=f"learning-{name}", dataset=args.dataset, task_ids=task_ids, model=args.model,
                     sampling=sampling, learn=learn, vote="weighted")


def finetune_seconds_per_epoch(run_dir: Path) -> float:
    adapters = {json.loads(line).get("adapter") for line in (run_dir / "candidates.jsonl").open()} - {""}
    seconds = [json.loads((Path(a) / "arcsynth_manifest.json").read_text())["seconds"] for a in adapters]
    return statistics.mean(seconds) if seconds else 0.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--dataset", default="arc-agi-1/evaluation")
    p.add_argument("--limit", type=int, default=3)
    p.add_argument("--samples", type=int, default=8, help="samples per task, every scheme")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--min-p", type=float, default=0.05)
    p.add_argument("--finetune-steps", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("runs/benchmark-learning"))
    args = p.parse_args()

    from arcsynth.common.data import load_tasks
    from arcsynth.common.redis_client import redis_client
    from arcsynth.producer.cluster import LocalCluster
    from arcsynth.producer.run import Producer, start_run
    from arcsynth.producer.runstate import RunState

    tasks = load_tasks(args.dataset, limit=args.limit)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rows = []
    with LocalCluster(model=args.model) as cluster:
        for name, scope, rex in SCHEMES:
            config = scheme_config(name, scope, rex, args, [t.id for t in tasks])
            config = config.model_copy(update={"run_id": f"{config.run_id}-{stamp}"})
            run_dir = args.out / config.run_id
            state = RunState(redis_client(cluster.app.conf.broker_url), config.run_id)
            start = time.perf_counter()
            outcome = Producer(cluster.app, start_run(run_dir, config, tasks, state), state).run()
            wall = time.perf_counter() - start
            scores = json.loads((run_dir / "score.json").read_text())["tasks"] if outcome.score is not None else {}
            rows.append((name, sum(v == 1.0 for v in scores.values()), outcome.score or 0.0,
                         outcome.candidates / max(1, len(tasks)), wall, finetune_seconds_per_epoch(run_dir)))
    print(f"{len(tasks)} tasks of {args.dataset}, model {args.model}, {args.samples} samples per task, "
          f"{args.epochs} epochs for the learning schemes")
    print(f"{'scheme':<12}{'solved':>8}{'score':>8}{'drawn/task':>14}{'wall s':>9}{'fine-tune s/epoch':>19}")
    for name, solved, score, samples, wall, ft in rows:
        print(f"{name:<12}{solved:>8}{score:>8.3f}{samples:>14.1f}{wall:>9.1f}{ft:>19.1f}")
    by = {name: score for name, _, score, *_ in rows}
    print(f"learning search={by['search']:.3f} task={by['task']:.3f} run={by['run']:.3f} samples_per_task={args.samples}")


if __name__ == "__main__":
    main()
