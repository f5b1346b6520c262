"""The producer: the `arcsynth` CLI, run orchestration and the embedded local cluster."""
