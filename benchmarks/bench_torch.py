"""Torch backend benchmark: a whole tensor batch through the torch kernels against the numpy path.

Times, in one interleaved run on the same images, ``HistogramMatcher.transform``
of an ``(N, 3, S, S)`` tensor through the torch kernel (on the CPU unless
``--device`` names another; on the CPU the kernels are switched on with
``histmatch_ml.backends.torch.KERNELS_ON_CPU`` for these timings, since CPU
tensors otherwise take the numpy path) against the numpy path on the same
batch as an ``(N, S, S, 3)`` array with ``n_jobs=2`` (its best case: no tensor
conversion), and against kornia's ``histogram_matching`` when kornia is
installed (one call on the whole batch, which it pools into one histogram
matched to one reference image: not the per-image task, shown for scale).
"tensor, default route" is ``transform`` of the same tensor as the library
runs it by default: on the CPU the numpy kernels reading and writing the
tensor's channels-first planes (no layout conversion for ``per_channel``,
``exact`` and ``landmarks``), on another device the torch kernel itself (so
the column is left out there). ``RandomHistogramMatching`` on the tensor batch
(a reference and a strength drawn per image, one batched call through the
kernel) is timed in the same loop.

Rows: ``per_channel`` (all the columns), then ``exact`` (both orderings) and
``landmarks`` (torch kernel against the numpy path only), uint8 and float32.
``exact`` rows use a batch of ``--exact-batch`` images (default 8): a round of
the default batch of 32 would take minutes on 2 cores.

Images: scikit-image's ``astronaut``, ``coffee``, ``chelsea`` and ``rocket``
resized to SxS, rolled and brightened into N distinct images; the matcher is
fitted on ``hubble_deep_field`` and ``immunohistochemistry``; float32 rows
hold the same images ``/ 255`` plus a little noise (not 8-bit levels).
Target (issue 18, on CPU): a CPU tensor batch at least as fast per image as the
numpy path on the same images as an array, on every row: judged on the
default route, which is what ``transform(tensor)`` runs on the CPU; the torch
kernel's own ratio is printed beside it. Run::

    python benchmarks/bench_torch.py                 # batch 32, 512x512
    python benchmarks/bench_torch.py --batch 256 --quick --no-kornia   # the issue's batch
    python benchmarks/bench_torch.py --device cuda --batch 256 --size 1024
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np
import torch
from _harness import Table, interleaved_medians, machine, print_targets
from skimage import data

from histmatch_ml import HistogramMatcher, RandomHistogramMatching
from histmatch_ml.backends import torch as torch_backend

#: the numpy path's time per image over a CPU tensor's (its default route), at least
CPU_TARGET = 1.0
SOURCES = ("astronaut", "coffee", "chelsea", "rocket")
REFERENCES = ("hubble_deep_field", "immunohistochemistry")
#: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
SMOKE_ARGS = ("--quick", "--batch", "2", "--size", "48")
#: the methods timed after per_channel: (label, method, options)
OTHER_METHODS = (
    ("exact, variational", "exact", {"ordering": "variational"}),
    ("exact, local_means", "exact", {"ordering": "local_means"}),
    ("landmarks", "landmarks", {}),
)


def _resized(name: str, size: int) -> np.ndarray:
    return cv2.resize(getattr(data, name)(), (size, size), interpolation=cv2.INTER_AREA)


def batch_of(n: int, size: int) -> np.ndarray:
    """``(n, size, size, 3)`` uint8: the sources, rolled and brightened into distinct images."""
    photos = [_resized(name, size) for name in SOURCES]
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        shifted = np.roll(photos[i % len(photos)], 7 * i, axis=1).astype(np.int16)
        out[i] = np.clip(shifted + (i % 31) - 15, 0, 255)
    return out


def _kornia():
    try:
        from kornia.contrib.histogram_matching import histogram_matching
    except ImportError:
        return None
    return histogram_matching


def _on_kernel(fn):
    """``fn`` with the torch kernels switched on for CPU tensors too (restored after)."""

    def run():
        before = torch_backend.KERNELS_ON_CPU
        torch_backend.KERNELS_ON_CPU = True
        try:
            return fn()
        finally:
            torch_backend.KERNELS_ON_CPU = before

    return run


def _timed(fn, sync):
    def run():
        fn()
        sync()

    return run


def _method_fns(matcher, arrays: np.ndarray, x: torch.Tensor, sync) -> dict:
    """The torch kernel, the numpy path and (on the CPU) the tensor's default route."""
    fns = {
        "torch": _timed(_on_kernel(lambda: matcher.transform(x)), sync),
        "numpy": _timed(lambda: matcher.transform(arrays), sync),
    }
    if x.device.type == "cpu":  # (elsewhere the default route is the torch kernel)
        fns["default"] = _timed(lambda: matcher.transform(x), sync)
    return fns


def _times(arrays: np.ndarray, references: list, device, repeat: int, kornia_match) -> dict:
    """Interleaved medians of :func:`_method_fns` for per_channel, the augmenter and kornia."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    matcher = HistogramMatcher(n_jobs=2).fit(references)
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(references)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arrays, -1, 1))).to(device)
    template = torch.from_numpy(np.moveaxis(references[0], -1, 0).copy()).to(device)
    fns = _method_fns(matcher, arrays, x, sync)
    fns["aug"] = _timed(_on_kernel(lambda: aug(x)), sync)
    if kornia_match is not None:
        fns["kornia"] = _timed(lambda: kornia_match(x, template), sync)
    return interleaved_medians(fns, repeat=repeat, warmup=1)


def _method_times(
    arrays: np.ndarray, references: list, device, repeat: int, method: str, options: dict
) -> dict:
    """Interleaved medians of :func:`_method_fns` for one method (``n_jobs=2``)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    matcher = HistogramMatcher(method, n_jobs=2, **options).fit(references)
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(arrays, -1, 1))).to(device)
    return interleaved_medians(_method_fns(matcher, arrays, x, sync), repeat=repeat, warmup=1)


def main(argv: list[str] | None = None) -> Table:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--batch", type=int, default=32, help="images per batch")
    parser.add_argument("--size", type=int, default=512, help="image side")
    parser.add_argument("--device", default="cpu", help="torch device of the tensors")
    parser.add_argument(
        "--exact-batch", type=int, default=8, help="images per batch of the exact rows"
    )
    parser.add_argument(
        "--no-kornia", action="store_true", help="leave kornia out (slow on large CPU batches)"
    )
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else 7
    device = torch.device(args.device)
    refs = [_resized(name, args.size) for name in REFERENCES]
    images = batch_of(args.batch, args.size)
    noise = np.random.default_rng(0).normal(0, 0.004, images.shape).astype(np.float32)
    kornia_match = None if args.no_kornia else _kornia()
    table = Table(
        "case",
        "torch kernel",
        "numpy path (n_jobs=2)",
        "tensor, default route",
        "kornia (pooled)",
        "RandomHistogramMatching",
        "torch images/s",
        "numpy images/s",
        "numpy / torch kernel",
        "numpy / default route",
        "target",
    )
    verdicts = []

    def add_row(label: str, n: int, t: dict) -> None:
        case = f"{label} RGB {args.size}x{args.size}, batch {n}, {device.type}"
        verdict = "-"
        if "default" in t:  # (the CPU: the target is judged on what transform(tensor) runs)
            met = t["numpy"] / t["default"] >= CPU_TARGET
            verdicts.append((case, met))
            verdict = f">= {CPU_TARGET:.1f}x: {'met' if met else 'missed'}"
        table.row(
            case,
            t["torch"],
            t["numpy"],
            t.get("default"),
            t.get("kornia"),
            t.get("aug"),
            f"{n / t['torch']:.0f}",
            f"{n / t['numpy']:.0f}",
            f"{t['numpy'] / t['torch']:.2f}x",
            f"{t['numpy'] / t['default']:.2f}x" if "default" in t else "-",
            verdict,
        )

    floats = images / np.float32(255) + noise
    float_refs = [r / np.float32(255) for r in refs]
    cases = (("uint8", images, refs), ("float32", floats, float_refs))
    for label, arrays, references in cases:
        add_row(label, args.batch, _times(arrays, references, device, repeat, kornia_match))
    for name, method, options in OTHER_METHODS:
        n = min(args.batch, args.exact_batch) if method == "exact" else args.batch
        for label, arrays, references in cases:
            t = _method_times(arrays[:n], references, device, repeat, method, options)
            add_row(f"{name}: {label}", n, t)
    print(
        f"{machine()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"medians of {repeat} interleaved runs\n"
    )
    print(table.markdown())
    print_targets(verdicts)
    return table


if __name__ == "__main__":
    main()
