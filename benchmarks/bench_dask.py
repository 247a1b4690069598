"""Scale-out on dask: fit and transform throughput, the cost model, float merges' exactness.

In one run, on a dask array of ``--n`` generated uint8 RGB images of ``--size``
pixels square (blocks of ``--block`` images, each block drawn from a
generator seeded by its position, so the array is never materialised on the
client and every variant sees the same pixels):

* **fit**: the in-memory loop (each block generated, then ``partial_fit``),
  ``fit`` of the dask array on dask's threaded scheduler (2 threads) and on a
  2-worker ``distributed.LocalCluster`` (processes, one thread each), timed
  round-robin; images/s and the ratio to the loop (target: the cluster at
  least 1.6x the loop). The three models have the same fingerprint.
* **client memory**: tracemalloc's peak in the client process during a
  cluster fit at ``--n`` and at a quarter of it (the input array made before),
  the scheduler and 2 workers in processes of their own, in blocks of a
  sixteenth of ``--block`` so that both span several windows of blocks; with
  ``distributed``'s defaults, and with ``distributed.admin.low-level-log-length``
  set to 0 (by default each connection keeps its last 1,000 messages, every
  window's graph among them). Target, with the defaults: at most 1.5x apart,
  and below one block of ``--block`` images (the client holds the graphs of
  two windows and states only).
* **transform**: the first ``--transform-n`` images matched lazily and written
  as ``.npy`` blocks (``dask.array.to_npy_stack``), against the loop
  (generate, transform, ``numpy.save`` per block).
* **cost model**: the method's ``learn`` time per image (one block, one
  thread), PNG decode time per image (``histmatch_ml.io.read_image``), its
  ``merge`` time per pair of states, the state's size in bytes (pickled) and
  the scheduler's tasks per second (empty tasks on the cluster). The README
  section projects a fit over 100 million images on 100 workers from them.
* **float states**: float32 references in ``--shards`` shards (each shard
  scaled and shifted, so they differ), learned with the method's ``learn`` and
  merged with its ``merge``, one after the other (after 16, 64, 256 and all
  merges) and as a balanced tree; the largest rank error of the merged
  quantile function on a 1,024-point probability grid against the pooled
  data, in units of ``1 / 1023``, and whether the merged state equals the
  pooled data's state bit for bit (it should: float states merge exactly).

Run::

    python benchmarks/bench_dask.py           # 20,000 images 256x256 (a few minutes)
    python benchmarks/bench_dask.py --quick   # one timed round
"""

from __future__ import annotations

import argparse
import math
import os
import pickle
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _harness import Table, interleaved_medians, machine, peak_bytes, print_targets

from histmatch_ml import HistogramMatcher
from histmatch_ml._images import to_batch
from histmatch_ml._reference import quantile_values
from histmatch_ml.backends.dask import WINDOW_BLOCKS
from histmatch_ml.io import fingerprint
from histmatch_ml.methods import get_method

try:  # without the [dask] extra the script has nothing to run, and no smoke test
    import dask
    import dask.array as da
    import distributed

    #: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
    SMOKE_ARGS = ("--quick", "--n", "256", "--size", "32", "--transform-n", "64", "--shards", "64")
except ImportError:  # pragma: no cover - the [dask] extra is missing
    dask = da = distributed = None

#: least required fit throughput of the 2-worker cluster over the in-memory loop
SPEED_TARGET = 1.6
#: largest allowed ratio of the client's peak memory at N to its peak at N / 4
MEMORY_TARGET = 1.5
SEED = 2026


# --------------------------------------------------------------------------- inputs
def _block(start: int, shape: tuple[int, ...]) -> np.ndarray:
    """The images of the block starting at image ``start``: seeded by its position."""
    # uniform bytes straight from the bit generator's 64-bit words, in one allocation
    words = np.random.PCG64([SEED, start]).random_raw(-(-math.prod(shape) // 8))
    return words.view(np.uint8)[: math.prod(shape)].reshape(shape)


def _generated(n: int, size: int, block: int, block_id=None) -> np.ndarray:
    start = block_id[0] * block  # (``block_id``, not ``block_info``: dask keeps a
    # ``block_info`` entry per block in the graph of every window, a ``block_id`` it derives)
    return _block(start, (min(block, n - start), size, size, 3))


def images(n: int, size: int, block: int) -> da.Array:
    """``(n, size, size, 3)`` uint8 images as a lazy dask array of blocks of ``block``."""
    sizes = (block,) * (n // block) + ((n % block,) if n % block else ())
    return da.map_blocks(
        _generated,
        n,
        size,
        block,
        chunks=(sizes, (size,), (size,), (3,)),
        dtype=np.uint8,
        meta=np.empty((0, 0, 0, 0), dtype=np.uint8),
    )


def _blocks(n: int, size: int, block: int):
    """The same images, block by block, in this process."""
    for start in range(0, n, block):
        yield _block(start, (min(block, n - start), size, size, 3))


# ------------------------------------------------------------------------- measures
def loop_fit(n: int, size: int, block: int) -> HistogramMatcher:
    matcher = HistogramMatcher()
    for images_ in _blocks(n, size, block):
        matcher.partial_fit(images_)
    return matcher


def loop_transform(matcher, n, size, block, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for i, images_ in enumerate(_blocks(n, size, block)):
        np.save(out / f"{i}.npy", matcher.transform(images_))


def dask_transform(matcher, X, out: Path) -> None:
    da.to_npy_stack(out, matcher.transform(X), axis=0)


def client_peaks(
    counts: Sequence[int], size: int, block: int, log_length: int | None = None
) -> dict[int, int]:
    """The client's tracemalloc peak during a cluster fit of ``count`` images, per count.

    The scheduler and the 2 workers run in processes of their own
    (``SubprocessCluster``), as in a deployment: a ``LocalCluster``'s scheduler
    lives in the client's process, and its logs of recent task transitions
    would be counted as the client's. The input array is made before the
    measured fit (its own graph is the caller's). ``log_length`` sets
    ``distributed.admin.low-level-log-length`` for the client: ``distributed``
    keeps that many of the last messages each connection sent (1,000 by
    default), every window's graph among them.
    """
    from distributed.deploy.subprocess import SubprocessCluster

    config = {} if log_length is None else {"distributed.admin.low-level-log-length": log_length}
    with (
        dask.config.set(config),
        SubprocessCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):

        def fit(X: da.Array) -> None:
            with dask.config.set(scheduler=client.get):
                HistogramMatcher().fit(X)

        fit(images(min(counts), size, block))  # (warm-up: imports and connections on the workers)
        peaks = {}
        for count in counts:
            X = images(count, size, block)
            peaks[count] = peak_bytes(lambda X=X: fit(X))
        return peaks


def scheduler_rate(client, n_tasks: int) -> float:
    """Empty tasks per second through the cluster's scheduler (submitted as one graph)."""
    tasks = [dask.delayed(int)(i) for i in range(n_tasks)]
    t0 = time.perf_counter()
    client.compute(tasks, sync=True)
    return n_tasks / (time.perf_counter() - t0)


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _rank_error(values: np.ndarray, data: np.ndarray) -> float:
    """Largest distance between knot ``k``'s probability ``k / (n - 1)`` and its value's rank."""
    probs = np.linspace(0.0, 1.0, len(values))
    below = np.searchsorted(data, values, side="left") / len(data)
    upto = np.searchsorted(data, values, side="right") / len(data)
    return float(np.max(np.maximum(0.0, np.maximum(below - probs, probs - upto))))


def float_merge_errors(n_shards: int, grid: int, pixels: int) -> dict[str, tuple[float, bool]]:
    """Float states of shards merged through the hooks, against the pooled data.

    Per case: the largest rank error of the merged quantile function on a
    ``grid``-point probability grid, in units of ``1 / (grid - 1)``, and whether
    the merged state equals the state learned from the pooled data, bit for bit.
    """
    method = get_method("per_channel")
    params = {"n_quantiles": 1024, "grid_cells": 65536, "strength": 1.0}
    rng = np.random.default_rng(SEED)
    side = int(math.sqrt(pixels))
    shards = [
        (rng.standard_normal((side, side, 1)) * (1 + i % 7) + 0.01 * i).astype(np.float32)
        for i in range(n_shards)
    ]
    states = [method.learn(to_batch([s]), params, None) for s in shards]
    n = side * side
    probs = np.linspace(0.0, 1.0, grid)

    def measured(state: dict, count: int) -> tuple[float, bool]:
        data = np.concatenate([s.ravel() for s in shards[:count]])
        pooled = method.learn(to_batch([data.reshape(1, -1, 1)]), params, None)
        same = all(np.array_equal(state[k], pooled[k]) for k in pooled)
        values = quantile_values(method.prepare(state, params), 0, probs)
        return _rank_error(values, np.sort(data)) * (grid - 1), same

    errors = {}
    state, count = states[0], n
    checkpoints = {16, 64, 256, n_shards}
    for i, other in enumerate(states[1:], start=2):
        state = method.merge(state, count, other, n, params)
        count += n
        if i in checkpoints:
            errors[f"sequential {i}"] = measured(state, i)
    level = [(s, n) for s in states]
    while len(level) > 1:  # pairs merged level by level (an odd one out moves up)
        merged = [
            (method.merge(a, na, b, nb, params), na + nb)
            for (a, na), (b, nb) in zip(level[0::2], level[1::2])
        ]
        level = merged + level[len(merged) * 2 :]
    errors[f"balanced tree {n_shards}"] = measured(level[0][0], n_shards)
    return errors


# ----------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> Table:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one timed round, no warm-up")
    parser.add_argument("--n", type=int, default=20_000, help="images fitted (default 20,000)")
    parser.add_argument("--size", type=int, default=256, help="image side (default 256)")
    parser.add_argument(
        "--block", type=int, default=256, help="images per block (default 256: 48 MiB)"
    )
    parser.add_argument("--transform-n", type=int, default=2_000, help="images transformed")
    parser.add_argument("--shards", type=int, default=1024, help="float shards merged")
    args = parser.parse_args(argv)
    repeat, warmup = (1, 0) if args.quick else (5, 1)
    n, size, block = args.n, args.size, args.block
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = Table("case", "N", "time", "images/s", "vs loop", "client peak", "measure", "target")
    verdicts: list[tuple[str, bool]] = []
    X = images(n, size, block)
    image_bytes = size * size * 3
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):

        def cluster_fit():
            with dask.config.set(scheduler=client.get):
                return HistogramMatcher().fit(X)

        def threads_fit():
            with dask.config.set(scheduler="threads", num_workers=2):
                return HistogramMatcher().fit(X)

        fits = {
            "loop": lambda: loop_fit(n, size, block),
            "threads": threads_fit,
            "cluster": cluster_fit,
        }
        times = interleaved_medians(fits, repeat=repeat, warmup=warmup)
        digests = {fingerprint(fit()) for fit in fits.values()}

        memory_block = max(1, block // 16)
        peaks = client_peaks((n // 4, n), size, memory_block)
        quiet_peaks = client_peaks((n // 4, n), size, memory_block, log_length=0)
        speedup = times["loop"] / times["cluster"]
        same = "same fingerprint" if len(digests) == 1 else "FINGERPRINTS DIFFER"
        rows = (
            ("fit, in-memory partial_fit loop (1 process)", "loop", None),
            ("fit, dask threads (2)", "threads", None),
            ("fit, LocalCluster (2 worker processes)", "cluster", peaks[n]),
        )
        for case, key, peak in rows:
            target = None
            if key == "cluster":
                met = speedup >= SPEED_TARGET
                verdicts.append((f"cluster fit >= {SPEED_TARGET}x the loop", met))
                target = f">= {SPEED_TARGET}x loop: {'met' if met else 'MISSED'}"
            table.row(
                case,
                f"{n:,}",
                times[key],
                f"{n / times[key]:,.0f}",
                f"{times['loop'] / times[key]:.2f}x",
                None if peak is None else f"{peak / 2**20:.1f} MiB",
                same,
                target,
            )
        windows = (
            f"blocks of {memory_block}: {math.ceil(n / 4 / memory_block / WINDOW_BLOCKS)} and "
            f"{math.ceil(n / memory_block / WINDOW_BLOCKS)} windows; one block of --block = "
            f"{block * image_bytes / 2**20:.1f} MiB"
        )
        for label, at in (
            ("distributed's defaults", peaks),
            ("distributed.admin.low-level-log-length = 0", quiet_peaks),
        ):
            ratio = at[n] / at[n // 4]
            target = None
            if at is peaks:
                met = ratio <= MEMORY_TARGET and at[n] < block * image_bytes
                verdicts.append((f"client peak at N within {MEMORY_TARGET}x of N/4", met))
                target = f"<= {MEMORY_TARGET}x and < one block: {'met' if met else 'MISSED'}"
            table.row(
                f"fit, cluster: client peak at N / 4 and N, {label}",
                f"{n // 4:,} / {n:,}",
                None,
                None,
                None,
                f"{at[n // 4] / 2**20:.1f} / {at[n] / 2**20:.1f} MiB",
                f"peak(N) / peak(N/4) = {ratio:.2f}; {windows}",
                target,
            )

        # transform, written as .npy blocks
        nt = min(args.transform_n, n)
        matcher = HistogramMatcher().fit(_block(n, (4, size, size, 3)) // 2)
        Xt = images(nt, size, block)
        work = Path(tempfile.mkdtemp(prefix="bench-dask-"))

        def fresh(name: str) -> Path:
            shutil.rmtree(work / name, ignore_errors=True)
            return work / name

        def cluster_transform():
            with dask.config.set(scheduler=client.get):
                dask_transform(matcher, Xt, fresh("cluster"))

        def threads_transform():
            with dask.config.set(scheduler="threads", num_workers=2):
                dask_transform(matcher, Xt, fresh("threads"))

        try:
            transforms = interleaved_medians(
                {
                    "loop": lambda: loop_transform(matcher, nt, size, block, fresh("loop")),
                    "threads": threads_transform,
                    "cluster": cluster_transform,
                },
                repeat=repeat,
                warmup=warmup,
            )
            same_out = all(
                np.array_equal(np.load(work / "loop" / "0.npy"), np.load(work / k / "0.npy"))
                for k in ("threads", "cluster")
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        for case, key in (
            ("transform to .npy blocks, in-memory loop", "loop"),
            ("transform to .npy blocks, dask threads (2)", "threads"),
            ("transform to .npy blocks, LocalCluster (2)", "cluster"),
        ):
            table.row(
                case,
                f"{nt:,}",
                transforms[key],
                f"{nt / transforms[key]:,.0f}",
                f"{transforms['loop'] / transforms[key]:.2f}x",
                None,
                "outputs equal" if same_out else "OUTPUTS DIFFER",
                None,
            )

        # the cost model
        method = get_method("per_channel")
        params = {"n_quantiles": 1024, "strength": 1.0}
        one = to_batch(_block(0, (block, size, size, 3)))
        learn = _median(lambda: method.learn(one, params, None), 5 * repeat) / block
        state = method.learn(one, params, None)
        merge = _median(lambda: method.merge(state, 1, state, 1, params), 50 * repeat)
        state_bytes = len(pickle.dumps(state, protocol=5))
        scheduler_rate(client, 200)  # (warm-up)
        rate = statistics.median(scheduler_rate(client, 2000) for _ in range(3))
    png = Path(tempfile.mkdtemp(prefix="bench-dask-png-"))
    try:
        from PIL import Image

        from histmatch_ml.io import read_image

        Image.fromarray(_block(0, (size, size, 3))).save(png / "a.png", compress_level=1)
        decode = _median(lambda: read_image(png / "a.png"), 20 * repeat)
    finally:
        shutil.rmtree(png, ignore_errors=True)
    for case, value in (
        ("cost: learn per image (per_channel uint8, one thread)", f"{learn * 1e3:.3f} ms"),
        ("cost: PNG read + decode per image", f"{decode * 1e3:.3f} ms"),
        ("cost: merge per pair of states", f"{merge * 1e3:.3f} ms"),
        ("cost: state size (pickled)", f"{state_bytes:,} bytes"),
        ("cost: scheduler throughput (empty tasks)", f"{rate:,.0f} tasks/s"),
    ):
        table.row(case, None, None, None, None, None, value, None)

    # float states after many merges
    for case, (err, same) in float_merge_errors(args.shards, 1024, 4096).items():
        table.row(
            f"float state: {case} shards merged",
            f"{int(case.split()[-1]) * 4096:,} px",
            None,
            None,
            None,
            None,
            f"max rank error {err:.3f} / 1023; state {'equals' if same else 'differs from'} "
            "the pooled data's",
            None,
        )
        verdicts.append((f"float state after {case} merges equals the pooled state", same))
    print(
        f"histmatch_ml dask benchmark; {machine()}; dask {dask.__version__}, distributed "
        f"{distributed.__version__}; load average {load:.1f} at start; medians of {repeat} "
        f"interleaved runs after {warmup} warm-up; blocks of {block} images {size}x{size}\n"
    )
    print(table.markdown())
    print_targets(verdicts)
    return table


if __name__ == "__main__":
    main()
