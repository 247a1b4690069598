"""Smoke test of the benchmark scripts, so they do not rot.

Every ``benchmarks/bench_*.py`` that defines ``SMOKE_ARGS`` (command-line
arguments giving a run of a few seconds) has its ``main`` run with them; the
printed markdown table is checked for shape, never for speed.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(BENCH_DIR.glob("bench_*.py"))


def _load(path: Path):
    """Import a benchmark script as a module (they import ``_harness`` beside them)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH_DIR))
        spec = importlib.util.spec_from_file_location(f"_smoke_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
        spec.loader.exec_module(module)
    return module


@functools.cache
def _run(path: Path) -> tuple[object, object, str]:
    """``(module, main's return value, printed output)`` of one smoke run, run once."""
    module = _load(path)
    if not hasattr(module, "SMOKE_ARGS"):
        pytest.skip(f"{path.name} defines no SMOKE_ARGS (no quick mode to smoke-test)")
    out = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out):
        mp.syspath_prepend(str(BENCH_DIR))  # for imports made inside main
        result = module.main(list(module.SMOKE_ARGS))
    return module, result, out.getvalue()


def _tables(out: str) -> list[list[list[str]]]:
    """Cells of the rows (header included) of each markdown table in ``out``."""
    tables: list[list[list[str]]] = []
    inside = False
    for line in out.splitlines():
        if not line.startswith("|"):
            inside = False
            continue
        if not inside:
            tables.append([])
            inside = True
        if not line.startswith("|---"):
            tables[-1].append([cell.strip() for cell in line.strip("|").split("|")])
    return tables


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_runs(path):
    _, _, out = _run(path)
    assert "|---" in out, f"{path.name} printed no markdown table"
    for rows in _tables(out):
        assert len(rows) >= 2  # a header and at least one measured row
        widths = {len(r) for r in rows}
        assert len(widths) == 1, f"{path.name}: rows of different widths {sorted(widths)}"


def test_bench_core_rows_carry_times_and_verdicts():
    _, report, _ = _run(BENCH_DIR / "bench_core.py")
    assert report.table.rows
    for row in report.table.rows:
        for cell in row[2:4]:  # the two time columns hold positive seconds
            if isinstance(cell, float):
                assert math.isfinite(cell) and cell > 0
    # every target row carries a verdict, one per target
    targets = [row[5] for row in report.table.rows if row[5] is not None]
    assert targets and len(targets) == len(report.verdicts)
    assert all(t.endswith((": met", ": MISSED")) for t in targets)


def test_bench_core_float_accuracy_measure():
    """The instrument behind the float accuracy rows measures what it claims."""
    module = _load(BENCH_DIR / "bench_core.py")
    rng = np.random.default_rng(0)
    ref = rng.random((20, 30, 1)).astype(np.float32)

    # the exact reference quantile function is numpy's Hazen quantile
    q = rng.random(50)
    hazen = module.hazen_quantile(ref[:, :, 0])
    np.testing.assert_allclose(hazen(q), np.quantile(ref, q, method="hazen"), rtol=1e-12)

    # ties share the midpoint of their run of the source CDF
    source = np.array([[3.0, 1.0], [3.0, 1.0]])
    np.testing.assert_allclose(
        module.exact_float_match(source, lambda p: p), [[0.75, 0.25], [0.75, 0.25]]
    )

    # W1 / range: 0 for the exact answer itself, the shift for a shifted one
    src = rng.normal(size=(16, 16, 1)).astype(np.float32)
    matcher = module._fitted(ref)
    p, v = module._reference.quantile_points(matcher.tables_, 0)
    exact = module.exact_float_match(src[:, :, 0], lambda x: np.interp(x, p, v))[:, :, None]
    value_range = float(np.ptp(ref))
    assert module.float_error(exact, src, ref, matcher.tables_) == pytest.approx(0, abs=1e-12)
    shifted = module.float_error(exact + 0.01, src, ref, matcher.tables_)
    assert shifted == pytest.approx(0.01 / value_range, rel=1e-9)
    exact_ref = module.exact_float_match(src[:, :, 0], hazen)[:, :, None]
    assert module.float_error(exact_ref, src, ref, None) == pytest.approx(0, abs=1e-12)
