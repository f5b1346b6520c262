"""Fine-tune overhead: what a job costs beyond its training loop, on a cold worker and a warm one.

One process plays one fine-tune worker and runs the same small job several times (each into a new
artifact root, so nothing is reused): two ARC tasks' programs as training examples, as search and
learn relabels them. Per job it measures the wall time of `train_adapter` and its training-loop
time (`train_seconds` in the adapter's manifest); overhead = wall - training. The first job loads
the base model; later ones find it resident. torch, transformers and peft are imported before the
first job (a worker can do that at start), so the cold overhead is the model's start-up, not
Python's imports; their time is printed apart.

Prints a table and a last line
`finetune_overhead cold_s=<first job's overhead> warm_s=<median overhead of later jobs> train_s=<median training time>
ratio=<warm_s/cold_s>` (target: ratio <= 0.2).
Usage: python benchmarks/finetune_overhead.py [--model smollm2] [--jobs 5] [--steps 4] [--trainer auto|loop|trl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROGRAMS = {"6150a2bd": "def transform(grid):\n    return grid[::-1, ::-1]",
            "74dd1130": "def transform(grid):\n    return grid.T"}


def small_job(model: str, steps: int, trainer: str):
    """The benchmark's job: the two tasks' prompts with their programs, `steps` steps of batch 1, rank 8."""
    from arcsynth.common.data import load_tasks
    from arcsynth.common.models import FinetuneRequest, LoraConfig, TrainConfig, TrainingExample
    from arcsynth.common.prompts import format_completion, task_messages

    tasks = load_tasks("arc-agi-1/training", task_ids=list(PROGRAMS))
    examples = [TrainingExample(messages=task_messages(t), completion=format_completion(PROGRAMS[t.id])) for t in tasks]
    return FinetuneRequest(base_model=model, examples=examples, lora=LoraConfig(rank=8, alpha=16),
                           train=TrainConfig(steps=steps, batch_size=1, learning_rate=1e-3), trainer=trainer)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2", help="an alias, a model folder or a hub id")
    ap.add_argument("--jobs", type=int, default=5, help="jobs in all: one cold, the rest warm")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--trainer", default="auto", choices=["auto", "loop", "trl"])
    args = ap.parse_args()
    if args.jobs < 2:
        ap.error("--jobs must be at least 2: one cold job and one warm one")

    start = time.perf_counter()
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    from arcsynth.common.model_store import prepare_smollm2
    from arcsynth.workers.lora_training import train_adapter
    imports_s = time.perf_counter() - start
    if args.model == "smollm2":
        prepare_smollm2()
    req = small_job(args.model, args.steps, args.trainer)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    print(f"model {args.model} on {device}; {args.jobs} jobs of {args.steps} steps; imports took {imports_s:.2f} s")

    rows = []
    print(f"{'job':>4} {'state':>5} {'wall_s':>8} {'train_s':>8} {'load_s':>8} {'overhead_s':>10} {'loss':>8}", flush=True)
    with tempfile.TemporaryDirectory(prefix="finetune-overhead-") as tmp:
        for i in range(args.jobs):
            begin = time.perf_counter()
            result = train_adapter(req, f"{tmp}/job{i}", f"{tmp}/cache")
            wall = time.perf_counter() - begin
            manifest = json.loads((Path(result.adapter) / "arcsynth_manifest.json").read_text())
            train, load = manifest["train_seconds"], manifest["load_seconds"]
            rows.append((wall, train))
            print(f"{i:>4} {'cold' if i == 0 else 'warm':>5} {wall:8.3f} {train:8.3f} {load:8.3f} {wall - train:10.3f} "
                  f"{result.final_loss:8.4f}", flush=True)
    cold = rows[0][0] - rows[0][1]
    warm = statistics.median(wall - train for wall, train in rows[1:])
    train = statistics.median(train for _, train in rows)
    print(f"finetune_overhead cold_s={cold:.3f} warm_s={warm:.3f} train_s={train:.3f} ratio={warm / cold:.3f}")


if __name__ == "__main__":
    main()
