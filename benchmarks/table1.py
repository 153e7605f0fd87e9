"""Reproduce the paper's Table 1 (same as ``kneeseg bench table1``); see kneeseg/bench/table1.py.

    python benchmarks/table1.py --out out/table1                 # full: 8 methods x 3 seeds, knee-ACL, cpu preset
    python benchmarks/table1.py --quick --out out/table1-quick   # CI smoke test (about 10 s)
"""

import sys

from kneeseg.bench.command import main

if __name__ == "__main__":
    raise SystemExit(main())
