"""The sandbox: a warm helper process that runs untrusted programs, and the executor that drives it.

`executor.Executor` is the project's side (start, run, grade). The helper is `helper.py`, run as
`python -I helper.py CONFIG` and importing nothing from the project; its parts are the
`sandbox_*` modules beside it: `sandbox_isolation` (namespaces, once per helper),
`sandbox_rootfs` (the minimal root runs see), `sandbox_seccomp` (the filter each run installs),
`sandbox_spawner` (the process that forks every run), `sandbox_fork` (how it forks),
`sandbox_run` (one forked, confined run),
`sandbox_job` and `sandbox_guard` (job isolation) and `sandbox_channel` (the validated result channel).
"""
