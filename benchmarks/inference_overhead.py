"""Inference overhead: what the queue costs on top of bare vLLM, and what batching across tasks buys.

Measured in one run, same prompts and sampling:
  (a) bare `vllm.LLM.generate` on all prompts in one process;
  (b) the same tasks through the producer, Redis and one inference worker (one slot per task);
  (c) 4 tasks submitted at once against the same 4 one after another, through the worker;
  (d) 16 tasks at once, each through its own LoRA adapter, against the same 16 on the base model
      (ARCSYNTH_MAX_LORAS decides how many adapters share a batch).
Prints a table, `lora_overhead ratio=<tokens/s with adapters / without>` and a last line
`inference_overhead ratio=<b/a>`.
Usage: python benchmarks/inference_overhead.py [--model smollm2] [--tasks 8] [--samples 8] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def bare(model: str, prompts: list[list[int]], n: int, max_tokens: int, max_model_len: int) -> tuple[int, float]:
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, max_model_len=max_model_len, gpu_memory_utilization=0.2, enable_lora=True,
              max_lora_rank=8, seed=0)
    params = SamplingParams(n=n, temperature=1.0, max_tokens=max_tokens)
    llm.generate([{"prompt_token_ids": p} for p in prompts[:1]], params, use_tqdm=False)  # warm-up
    start = time.perf_counter()
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    elapsed = time.perf_counter() - start
    tokens = sum(len(o.token_ids) for out in outs for o in out.outputs)
    del llm
    return tokens, elapsed


def through_worker(app, tasks, sampling, at_once: bool, model: str) -> tuple[int, float]:
    from arcsynth.common.jobs import SampleRequest, send_sample

    def send(t):
        return send_sample(app, SampleRequest(task=t, sampling=sampling, model=model))

    start = time.perf_counter()
    if at_once:
        results = [send(t) for t in tasks]
        outs = [r.get(timeout=1200) for r in results]
    else:
        outs = [send(t).get(timeout=1200) for t in tasks]
    elapsed = time.perf_counter() - start
    return sum(c["completion_tokens"] for o in outs for c in o["completions"]), elapsed


def make_adapters(model: str, root: Path, count: int, rank: int = 8) -> list[str]:
    """`count` fresh LoRA adapters (peft's initialisation: random A, zero B) on every attention projection."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(count):
        base = AutoModelForCausalLM.from_pretrained(model)
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                            task_type="CAUSAL_LM", init_lora_weights="gaussian")
        get_peft_model(base, config).save_pretrained(root / f"adapter-{i}")
        paths.append(str(root / f"adapter-{i}"))
    return paths


def through_adapters(app, tasks, sampling, adapters: list[str], model: str) -> tuple[int, float]:
    from arcsynth.common.jobs import SampleRequest, send_sample

    start = time.perf_counter()
    results = [send_sample(app, SampleRequest(task=t, sampling=sampling, adapter=a, model=model))
               for t, a in zip(tasks, adapters)]
    outs = [r.get(timeout=1800) for r in results]
    return sum(c["completion_tokens"] for o in outs for c in o["completions"]), time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--lora-tasks", type=int, default=16)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from arcsynth.common.data import load_tasks
    from arcsynth.common.model_store import resolve_model
    from arcsynth.common.models import SamplingConfig
    from arcsynth.common.prompts import task_messages
    from arcsynth.producer.cluster import LocalCluster

    model = resolve_model(args.model)
    tasks = load_tasks("arc-agi-1/training", task_ids=["6150a2bd", "74dd1130", "67a3c6ac", "3c9b0459", "9dfd6313",
                                                       "25ff71a9", "d037b0a7", "5582e5ca"])[: args.tasks]
    tok = AutoTokenizer.from_pretrained(model)
    prompts = [list(tok.apply_chat_template(task_messages(t), add_generation_prompt=True, tokenize=True)["input_ids"])
               for t in tasks]
    a_tokens, a_s = bare(model, prompts, args.samples, args.max_tokens, 4096)

    sampling = SamplingConfig(n=args.samples, temperature=1.0, max_tokens=args.max_tokens)
    import tempfile

    lora_tasks = [tasks[i % len(tasks)] for i in range(args.lora_tasks)]
    adapter_dir = Path(tempfile.mkdtemp(prefix="arcsynth-bench-adapters-"))
    adapters = make_adapters(model, adapter_dir, args.lora_tasks)
    env = {"ARCSYNTH_MAX_MODEL_LEN": "4096", "ARCSYNTH_MAX_LORA_RANK": "8"}
    slots = str(max(4, len(tasks), args.lora_tasks))
    with LocalCluster(model=args.model, kinds=("inference",), env=env,
                      worker_args={"inference": ["--concurrency", slots]}) as cluster:
        through_worker(cluster.app, tasks[:1], sampling, True, args.model)  # warm-up
        b_tokens, b_s = through_worker(cluster.app, tasks, sampling, True, args.model)
        c_once_tokens, c_once_s = through_worker(cluster.app, tasks[:4], sampling, True, args.model)
        c_seq_tokens, c_seq_s = through_worker(cluster.app, tasks[:4], sampling, False, args.model)
        through_adapters(cluster.app, lora_tasks[:2], sampling, adapters[:2], args.model)  # warm-up: first adapter loads
        d_base_tokens, d_base_s = through_worker(cluster.app, lora_tasks, sampling, True, args.model)
        d_lora_tokens, d_lora_s = through_adapters(cluster.app, lora_tasks, sampling, adapters, args.model)
    import shutil

    shutil.rmtree(adapter_dir, ignore_errors=True)

    rows = [("(a) bare vllm.LLM.generate", a_tokens, a_s), ("(b) producer + Redis + worker", b_tokens, b_s),
            ("(c) 4 tasks at once, worker", c_once_tokens, c_once_s),
            ("(c) 4 tasks one by one, worker", c_seq_tokens, c_seq_s),
            (f"(d) {args.lora_tasks} tasks, base model", d_base_tokens, d_base_s),
            (f"(d) {args.lora_tasks} tasks, own adapter each", d_lora_tokens, d_lora_s)]
    print(f"{len(tasks)} tasks x {args.samples} samples, max {args.max_tokens} tokens, model {args.model}")
    print(f"{'mode':<34}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}")
    for name, tokens, secs in rows:
        print(f"{name:<34}{tokens:>8}{secs:>9.2f}{tokens / secs:>10.1f}")
    batching = (c_once_tokens / c_once_s) / (c_seq_tokens / c_seq_s)
    print(f"batching across tasks: {batching:.2f}x tokens/s (4 at once vs one after another)")
    print(f"lora_overhead ratio={(d_lora_tokens / d_lora_s) / (d_base_tokens / d_base_s):.3f}")
    print(f"inference_overhead ratio={(b_tokens / b_s) / (a_tokens / a_s):.3f}")


if __name__ == "__main__":
    main()
