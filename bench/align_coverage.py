"""Print the alignment coverage of every architecture in the contract test's registry (a markdown table).

For each architecture: permutation groups, units aligned by weight matching on a randomly
permuted copy, units left unaligned and why, the worst RMSE over the aligned units, and the
time taken. Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/align_coverage.py [--quick]``
(``--quick`` skips the architectures marked slow). docs/alignment.md holds its output.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.test_align_contract import ARCHS, permuted_comparison


def kind_of(reason: str) -> str:
    """The reason without graph-node names (``view_6``, ``(chunk_1)``), so that like reasons count together."""
    return re.sub(r"\s*\(\w+\)|(?<=[a-z])_\d+\b", "", reason)


def row(name: str) -> str:
    start = time.perf_counter()
    *_, comparison = permuted_comparison(name)
    seconds = time.perf_counter() - start
    aligned = [layer for layer in comparison.layers if layer.aligned]
    missed = Counter(kind_of(layer.reason) for layer in comparison.layers if not layer.aligned)
    worst = max((g.rmse for layer in aligned for g in layer.groups), default=float("nan"))
    reasons = "; ".join(f"{n} x {reason}" for reason, n in missed.most_common(3)) or "–"
    return (f"| {name} | {comparison.alignment['groups']} | {len(aligned)} | {sum(missed.values())} | "
            f"{worst:.1e} | {seconds:.1f} | {reasons} |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the architectures the tests mark slow")
    args = parser.parse_args()
    print("| architecture | groups | units aligned | units not aligned | max rmse (aligned) | seconds | why not |")
    print("|---|---|---|---|---|---|---|")
    for name, arch in ARCHS.items():
        if not (args.quick and arch.slow):
            print(row(name), flush=True)


if __name__ == "__main__":
    main()
