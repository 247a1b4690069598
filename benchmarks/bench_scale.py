"""Scaling of ``method="exact"`` (and ``per_channel``, ``lab``) with the image size.

Source: skimage ``astronaut`` upsampled with ``cv2.resize`` (``INTER_LINEAR``)
to square sizes from 256x256 to 4096x4096; reference: ``coffee``. At each
size, in one interleaved loop: ``skimage.exposure.match_histograms`` with
``channel_axis=-1`` against fitted ``HistogramMatcher`` transforms: exact with
both orderings and lab (joint CIELAB, seeded) on the uint8 image, and
per_channel on the uint8 image and on a float32 version (``/255`` blurred with
sigma 1.5, so on the float grid) against skimage on that float image and the
``/255`` reference. Columns: median time, ratio to
skimage's call on the same image, time per megapixel, growth
exponent ``log(t2 / t1) / log(n2 / n1)`` from the previous size, and peak
memory (tracemalloc, reset between cases) over the image's bytes.

Power-of-two sizes: from 1024x1024 up, per_channel (uint8 and float32) on the
image and on the same image resized one column narrower (``N x (N - 1)``),
interleaved with more repeats than the main table; time per pixel of the
power-of-two image over the narrower one's (target at 4096x4096: at most
1.1x, no slowdown from power-of-two strides).

Fit throughput: ``HistogramMatcher().fit`` on ``--fit-images`` (2,000) RGB
256x256 crops of ``astronaut`` (seeded offsets) as uint8 and as continuous
float32 (``(crop + U[0, 1)) / 256``, so not 8-bit levels), and three
``np.percentile`` calls per float image (101 percentiles each) as the
yardstick of a sort per image; images/s and the float/uint8 ratio. Run::

    python benchmarks/bench_scale.py            # 256 .. 4096 (several minutes)
    python benchmarks/bench_scale.py --quick    # fewer repeats, up to 1024
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import cv2
import numpy as np
from _harness import Table, interleaved_medians, machine, peak_bytes, print_targets
from skimage import data
from skimage.exposure import match_histograms as sk_match

from histmatch_ml import HistogramMatcher

SIZES = (256, 512, 1024, 2048, 4096)
#: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
SMOKE_ARGS = ("--quick", "--max-size", "256", "--fit-images", "8")
#: slowest allowed ``ours / skimage`` time ratio: {case: (at 512x512, at 4096x4096)}
SLOWER = {"exact local_means": (10.0, 12.0), "exact variational": (15.0, 18.0)}
#: least required ``skimage / ours`` speed-up: {case: (at 256x256, from 512x512 up)}
FASTER = {"per_channel uint8": (3.0, 5.0), "per_channel float32": (10.0, 10.0)}
GROWTH = 1.1
#: most time per pixel of an N x N per_channel call over an N x (N - 1) one, at POW2_SIZE
POW2_RATIO, POW2_SIZE = 1.1, 4096
PEAK = {"exact local_means": 8.0, "exact variational": 8.0, "lab": 8.0}
PEAK_PER_CHANNEL = 1.5
#: least float32 / uint8 fit throughput
FIT_RATIO = 0.1


def _inputs(size: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The uint8 source at ``size`` (x ``width``) and its float32 version (``/255``, blurred)."""
    shape = (width or size, size)  # (cv2's order: width, height)
    image = cv2.resize(data.astronaut(), shape, interpolation=cv2.INTER_LINEAR)
    blurred = cv2.GaussianBlur(image.astype(np.float32) / np.float32(255), (0, 0), 1.5)
    return image, blurred


def _repeats(size: int, quick: bool) -> tuple[int, int]:
    """``(repeat, warmup)``: fewer runs at the sizes that take seconds (still a median of 3)."""
    if quick:
        return (3, 1) if size <= 512 else (1, 0)
    return {256: (11, 2), 512: (9, 2), 1024: (5, 1)}.get(size, (3, 1))


def main(argv: Sequence[str] | None = None) -> Table:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, sizes up to 1024")
    parser.add_argument("--max-size", type=int, default=None, help="largest size")
    parser.add_argument("--fit-images", type=int, default=2000, help="images of the fit rows")
    args = parser.parse_args(argv)
    max_size = args.max_size or (1024 if args.quick else SIZES[-1])
    reference = data.coffee()
    float_reference = reference.astype(np.float32) / np.float32(255)
    matchers = {
        "exact local_means": HistogramMatcher(method="exact", ordering="local_means"),
        "exact variational": HistogramMatcher(method="exact", ordering="variational"),
        "lab": HistogramMatcher(method="lab", random_state=0),
        "per_channel uint8": HistogramMatcher(method="per_channel"),
    }
    for m in matchers.values():
        m.fit(reference[None])
    float_matcher = HistogramMatcher(method="per_channel").fit(float_reference[None])
    table = Table("case", "size", "time", "ours / skimage", "ms / MP", "growth", "peak / image")
    pow2 = Table("case", "size", "time", "time, one column less", "per-pixel ratio")
    verdicts: list[tuple[str, bool]] = []
    previous: dict[str, tuple[int, float]] = {}
    previous_size = None
    print(f"{machine()}, numpy {np.__version__}, OpenCV {cv2.__version__}\n")
    for size in [s for s in SIZES if s <= max_size]:
        image, blurred = _inputs(size)
        x, xf = image[None], blurred[None]
        fns = {name: (lambda m=m, x=x: m.transform(x)) for name, m in matchers.items()}
        fns["per_channel float32"] = lambda xf=xf: float_matcher.transform(xf)
        fns["skimage"] = lambda image=image: sk_match(image, reference, channel_axis=-1)
        # (the float rows are compared with skimage on the same float image)
        fns["skimage float32"] = lambda b=blurred: sk_match(b, float_reference, channel_axis=-1)
        repeat, warmup = _repeats(size, args.quick)
        times = interleaved_medians(fns, repeat=repeat, warmup=warmup)
        n = size * size
        for name in ["skimage", "skimage float32", *matchers, "per_channel float32"]:
            t = times[name]
            peak = peak_bytes(fns[name]) / (blurred if "float32" in name else image).nbytes
            growth = None
            if name in previous:
                n1, t1 = previous[name]
                growth = math.log(t / t1) / math.log(n / n1)
                if not name.startswith("skimage"):  # (the peers are measured, not targeted)
                    verdicts.append((f"{name} growth {previous_size}->{size}", growth <= GROWTH))
            previous[name] = (n, t)
            ratio = t / times["skimage float32" if "float32" in name else "skimage"]
            if name in SLOWER and size in (512, 4096):
                limit = SLOWER[name][size == 4096]
                verdicts.append((f"{name} {size}: {ratio:.1f}x <= {limit:g}x", ratio <= limit))
            if name in FASTER:
                limit = FASTER[name][size > 256]
                ok = 1 / ratio >= limit
                verdicts.append((f"{name} {size}: {1 / ratio:.1f}x faster >= {limit:g}x", ok))
            if name in PEAK:
                limit = PEAK[name]
                verdicts.append((f"{name} {size} peak {peak:.1f}x <= {limit:g}x", peak <= limit))
            elif name.startswith("per_channel"):
                ok = peak <= PEAK_PER_CHANNEL
                verdicts.append((f"{name} {size} peak {peak:.2f}x <= 1.5x", ok))
            table.row(
                name,
                f"{size}x{size}",
                t,
                f"{ratio:.2f}x",
                f"{t * 1e3 / (n / 1e6):.1f}",
                "-" if growth is None else f"{growth:.2f}",
                f"{peak:.2f}x",
            )
        previous_size = size
        if size >= 1024:
            _power_of_two_rows(
                size,
                image,
                blurred,
                matchers["per_channel uint8"],
                float_matcher,
                args.quick,
                pow2,
                verdicts,
            )
    print(table.markdown())
    print("\ngrowth: log(t2 / t1) / log(n2 / n1) from the previous size; peak: tracemalloc")
    if pow2.rows:
        print()
        print(pow2.markdown())
    print()
    print(_fit_rows(args.fit_images, args.quick, verdicts).markdown())
    for case, met in verdicts:
        print(f"  {case}: {'met' if met else 'MISSED'}")
    print_targets(verdicts)
    return table


def _power_of_two_rows(
    size: int,
    image: np.ndarray,
    blurred: np.ndarray,
    matcher: HistogramMatcher,
    float_matcher: HistogramMatcher,
    quick: bool,
    table: Table,
    verdicts: list,
) -> None:
    """per_channel at ``size x size`` against ``size x (size - 1)`` (see the module docstring)."""
    narrow, narrow_blurred = _inputs(size, size - 1)
    fns = {
        "uint8": lambda: matcher.transform(image[None]),
        "uint8 narrow": lambda: matcher.transform(narrow[None]),
        "float32": lambda: float_matcher.transform(blurred[None]),
        "float32 narrow": lambda: float_matcher.transform(narrow_blurred[None]),
    }
    repeat = 3 if quick else (5 if size >= 4096 else 9)
    times = interleaved_medians(fns, repeat=repeat, warmup=1)
    for kind in ("uint8", "float32"):
        t, t_narrow = times[kind], times[f"{kind} narrow"]
        ratio = (t / size) / (t_narrow / (size - 1))  # (the same rows: per pixel is per column)
        table.row(f"per_channel {kind}", f"{size}x{size}", t, t_narrow, f"{ratio:.3f}x")
        if size == POW2_SIZE:
            case = f"per_channel {kind} {size}x{size} per pixel {ratio:.2f}x {size}x{size - 1}'s"
            verdicts.append((f"{case} <= {POW2_RATIO:g}x", ratio <= POW2_RATIO))


def _fit_rows(n_images: int, quick: bool, verdicts: list) -> Table:
    """Fit throughput of uint8 and continuous float32 references (see the module docstring)."""
    source = data.astronaut()
    rng = np.random.default_rng(0)
    offsets = rng.integers(0, source.shape[0] - 256, (n_images, 2))
    crops = np.stack([source[r : r + 256, c : c + 256] for r, c in offsets])
    floats = crops.astype(np.float32)
    floats += rng.random(floats.shape, dtype=np.float32)
    floats /= np.float32(256)

    def percentiles() -> None:
        q = np.linspace(0, 100, 101)
        for image in floats:
            for c in range(3):
                np.percentile(image[:, :, c], q)

    fns = {
        "fit uint8": lambda: HistogramMatcher().fit(crops),
        "fit float32": lambda: HistogramMatcher().fit(floats),
        "np.percentile, 3 per float32 image": percentiles,
    }
    times = interleaved_medians(fns, repeat=1 if quick else 3, warmup=0)
    table = Table("case", "images", "time", "images / s", "ratio to uint8 fit")
    for name, t in times.items():
        table.row(name, str(n_images), t, f"{n_images / t:.0f}", f"{times['fit uint8'] / t:.3f}")
    ratio = times["fit uint8"] / times["fit float32"]
    verdicts.append(
        (f"float32 fit {ratio:.3f}x the uint8 fit >= {FIT_RATIO:g}x", ratio >= FIT_RATIO)
    )
    return table


if __name__ == "__main__":
    main()
