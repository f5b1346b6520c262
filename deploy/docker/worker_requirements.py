"""Print the requirements of a worker image: the core dependencies plus the named extras.

Worker images install these and copy only `common/` and `workers/` (as the `arcsynth` namespace):
a worker runs without the producer's code. Usage: python worker_requirements.py EXTRA [EXTRA ...]
"""

import sys

import tomllib

with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
extras = project["optional-dependencies"]
unknown = [e for e in sys.argv[1:] if e not in extras]
if unknown:
    sys.exit(f"worker_requirements.py: unknown extra {unknown[0]!r} (pyproject.toml has {', '.join(extras)})")
print("\n".join([*project["dependencies"], *(req for e in sys.argv[1:] for req in extras[e])]))
