"""The three worker kinds: inference (vLLM), finetune (peft/unsloth), execute (sandboxed runs)."""
