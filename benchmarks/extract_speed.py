"""Program extraction on huge, hostile completions: time at 1x and 2x size, per prompt format.

Prints a table (seconds at each size and their ratio) and, last,
`extract_speed worst_growth=<largest 2x/1x ratio>`: about 2 for linear time, 4 for quadratic.
The inputs are those of tests/unit/test_prompts_extract.py (HUGE), each doubled for the second size.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout: its tests

from arcsynth.common import formats  # noqa: E402
from arcsynth.common.extract import ExtractionError  # noqa: E402
from arcsynth.common.formats import FORMATS  # noqa: E402
from tests.unit.test_prompts_extract import HUGE  # noqa: E402


def seconds(fmt: str, text: str, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        try:
            formats.extract(fmt, text)
        except ExtractionError:
            pass
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="time each input this many times; the best (default 3)")
    args = parser.parse_args()
    print(f"{'input':<44}{'format':<10}{'1x s':>9}{'2x s':>9}{'2x/1x':>8}")
    worst = 0.0
    for text in HUGE:
        for fmt in FORMATS:
            one, two = seconds(fmt, text, args.repeat), seconds(fmt, text * 2, args.repeat)
            growth = two / max(one, 1e-6)
            worst = max(worst, growth if one > 0.005 else 0.0)  # below 5 ms the ratio is noise
            print(f"{text[:40].encode('unicode_escape').decode()[:40]:<44}{fmt:<10}{one:>9.3f}{two:>9.3f}{growth:>8.2f}")
    print(f"extract_speed worst_growth={worst:.2f}")


if __name__ == "__main__":
    main()
