"""Shared timing helpers for the benchmark scripts (not part of the package).

Every script times this package and its peers *in the same run* on the same
inputs and reports medians and ratios, because absolute times on a shared
machine are noise. Usage::

    from _harness import median_time, peak_bytes, Table
    t = Table("case", "histmatch_ml", "skimage")
    ours = median_time(lambda: matcher.transform(x))
    theirs = median_time(lambda: skimage_match(x, ref))
    t.row("uint8 RGB 512", ours, theirs)        # times in seconds -> ms columns
    print(t.markdown(ratio=("skimage", "histmatch_ml")))
"""

from __future__ import annotations

import datetime
import gc
import os
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable


def median_time(
    fn: Callable[[], object], *, repeat: int = 15, warmup: int = 2, min_time: float = 0.0
) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeat`` runs after ``warmup``."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    *,
    repeat: int = 15,
    warmup: int = 2,
    shuffle: bool = True,
) -> dict[str, float]:
    """Medians of several callables timed round-robin, so machine load hits all alike.

    Each round runs every callable once, in a fresh (seeded) random order
    when ``shuffle``: a call's time depends on what ran just before it (a
    peer that frees large arrays leaves the next caller cold caches and
    unmapped pages), and a fixed order would always hand the same callable
    the same predecessor.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = list(fns.items())
    rng = random.Random(0)
    for _ in range(repeat):
        if shuffle:
            rng.shuffle(order)
        for name, fn in order:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_bytes(fn: Callable[[], object]) -> int:
    """Peak memory allocated by ``fn()`` as seen by tracemalloc (numpy reports to it)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def machine() -> str:
    """One line describing when and where the run happened."""
    return (
        f"{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )


class Table:
    """A markdown table of times; time columns are given in seconds, shown in ms.

    Times under a millisecond keep three decimals (microseconds), the others two.
    """

    def __init__(self, *columns: str) -> None:
        self.columns = list(columns)
        self.rows: list[list[object]] = []

    def row(self, *values: object) -> None:
        self.rows.append(list(values))

    def markdown(self, ratio: tuple[str, str] | None = None) -> str:
        """Render; ``ratio=(a, b)`` appends a column ``a / b`` (how many times b beats a)."""
        cols = list(self.columns)
        if ratio:
            cols.append(f"{ratio[0]} / {ratio[1]}")
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for r in self.rows:
            cells = []
            for v in r:
                if isinstance(v, float):
                    cells.append(f"{v * 1e3:.3f} ms" if v < 1e-3 else f"{v * 1e3:.2f} ms")
                elif v is None:
                    cells.append("-")
                else:
                    cells.append(str(v))
            if ratio:
                a, b = (r[self.columns.index(c)] for c in ratio)
                cells.append(
                    f"{a / b:.1f}x" if isinstance(a, float) and isinstance(b, float) else "-"
                )
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def common_arguments(parser) -> None:
    """Add the options every script shares: ``--quick`` and ``--size``."""
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--size", type=int, default=None, help="crop every image to its top-left SIZE square"
    )


def print_targets(verdicts: list[tuple[str, bool]]) -> None:
    """Print ``targets: met/total met`` and one ``missed:`` line per missed target."""
    missed = [case for case, met in verdicts if not met]
    print(f"\ntargets: {len(verdicts) - len(missed)}/{len(verdicts)} met")
    for case in missed:
        print(f"  missed: {case}")
