"""Run every benchmark in turn with its defaults and print their figures (``make bench``).

Each script prints its own figures and ratios; see its docstring for options. The full set takes
roughly 15-30 minutes on 2 CPU cores (the segment and export benchmarks write 20k x 20k slides once into
a cache folder).

    python benchmarks/run_all.py [NAME ...]      # e.g. segment export
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ["slide", "model", "segment", "export", "train", "encoders", "devices"]


def main(names: list[str]) -> int:
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}",
              file=sys.stderr)
        return 2
    failed = []
    for name in names or BENCHMARKS:
        print(f"\n=== bench_{name}.py ===", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / f"bench_{name}.py")])
        print(f"=== bench_{name}.py: exit {code} after {time.perf_counter() - start:.0f} s ===", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
