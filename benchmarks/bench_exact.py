"""Exact histogram specification: ``HistogramMatcher(method="exact")``.

Times, in one run and on the same inputs, the fitted exact matcher with both
strict orderings against ``skimage.exposure.match_histograms`` (classic CDF
matching, the cost floor a user compares with), and measures per sample image
the share of pixels the ordering leaves tied (``1 - strict_ordering_ratio``,
the worst channel of RGB images) with the time of one exact transform.

Source: skimage ``astronaut`` (512x512 RGB); reference: ``coffee`` (400x600).
The float32 rows are the images ``/ 255`` (8-bit levels: every pixel is in a run of
equal values) and the same plus a little noise (continuous: few runs); the batch
row matches 128 seeded 32x32 crops of the source in one transform against one
skimage call per crop, and the large rows the source (and ``camera``, matched
to ``moon``) upsampled 4x per side (``cv2.resize``, bilinear) on one thread and
with ``n_jobs=2`` (an RGB image's channels ordered at once, a grey one's keys
and buckets shared out). Tie and
per-image rows: coffee, chelsea (RGB) and camera, coins, moon, brick,
grass, gravel (grey), each matched to ``astronaut`` (its grey version for grey
images). Ratios are ``ours / skimage``: how many times slower than classic
matching the exact specification is. Run::

    python benchmarks/bench_exact.py            # the full run (about a minute)
    python benchmarks/bench_exact.py --quick    # fewer repeats
    python benchmarks/bench_exact.py --quick --size 64   # tiny crops (smoke test)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import cv2
import numpy as np
from _harness import Table, common_arguments, interleaved_medians, machine, print_targets
from skimage import data
from skimage.color import rgb2gray
from skimage.exposure import match_histograms as sk_match

from histmatch_ml import HistogramMatcher
from histmatch_ml.metrics import strict_ordering_ratio

ORDERINGS = ("local_means", "variational")
#: slowest allowed ``exact / skimage`` time ratio per ordering (uint8 RGB 512x512)
SPEED_TARGETS = {"local_means": 15.0, "variational": 30.0}
#: largest share of tied pixels ``variational`` may leave on any sample image
TIE_TARGET = 0.001
RGB_IMAGES = ("coffee", "chelsea")
GREY_IMAGES = ("camera", "coins", "moon", "brick", "grass", "gravel")
#: the batch of small crops: images, side
SMALL_BATCH = (128, 32)
#: the large photo: the source upsampled this many times per side, matched with N_JOBS threads
LARGE, N_JOBS = 4, 2
#: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
SMOKE_ARGS = ("--quick", "--size", "64")


def _photo(name: str, size: int | None) -> np.ndarray:
    """A bundled sample image, optionally cropped to its top-left ``size`` square."""
    img = getattr(data, name)()
    return img if size is None else np.ascontiguousarray(img[:size, :size])


def _grey_reference(size: int | None) -> np.ndarray:
    grey = (rgb2gray(data.astronaut()) * 255).round().astype(np.uint8)
    return grey if size is None else np.ascontiguousarray(grey[:size, :size])


def _channels(img: np.ndarray) -> list[np.ndarray]:
    return [img] if img.ndim == 2 else [np.ascontiguousarray(img[:, :, c]) for c in range(3)]


def _continuous(img: np.ndarray) -> np.ndarray:
    """float32 ``img / 255`` plus seeded Gaussian noise (sigma 0.004): not 8-bit levels."""
    noise = np.random.default_rng(0).normal(0, 0.004, img.shape).astype(np.float32)
    return img.astype(np.float32) / np.float32(255) + noise


def _fitted(reference: np.ndarray, ordering: str) -> HistogramMatcher:
    return HistogramMatcher(method="exact", ordering=ordering).fit(reference[None])


def _sk(image: np.ndarray, reference: np.ndarray) -> np.ndarray:
    return sk_match(image, reference, channel_axis=-1 if image.ndim == 3 else None)


class Report:
    """Rows of the two tables the script prints (times in seconds, shown in ms)."""

    def __init__(self) -> None:
        self.speed = Table(
            "case", "ordering", "histmatch_ml exact", "skimage", "ours / skimage", "target"
        )
        self.ties = Table(
            "image", "local_means", "variational", "tied, local_means", "tied, variational",
            "target",
        )  # fmt: skip
        self.verdicts: list[tuple[str, bool]] = []

    def verdict(self, case: str, label: str, met: bool) -> str:
        self.verdicts.append((case, met))
        return f"{label}: {'met' if met else 'MISSED'}"


def bench_speed(report: Report, size: int | None, repeat: int, warmup: int) -> None:
    """One row per (input, ordering): the exact transform against skimage in one loop."""
    src, ref = _photo("astronaut", size), _photo("coffee", size)
    shape = "x".join(map(str, src.shape[:2]))
    cases = {
        f"uint8 RGB {shape}": (src, ref, True),
        f"uint8 grey {shape}": (_photo("camera", size), _photo("moon", size), False),
        f"uint16 RGB {shape} (x257)": (
            src.astype(np.uint16) * np.uint16(257),
            ref.astype(np.uint16) * np.uint16(257),
            False,
        ),
        f"float32 RGB {shape} /255": (
            src.astype(np.float32) / np.float32(255),
            ref.astype(np.float32) / np.float32(255),
            False,
        ),
        f"float32 RGB {shape} /255 + noise": (_continuous(src), _continuous(ref), False),
    }
    for case, (image, reference, has_target) in cases.items():
        matchers = {o: _fitted(reference, o) for o in ORDERINGS}
        x = image[None]
        fns = {o: (lambda m=m, x=x: m.transform(x)) for o, m in matchers.items()}
        fns["skimage"] = lambda image=image, reference=reference: _sk(image, reference)
        t = interleaved_medians(fns, repeat=repeat, warmup=warmup)
        for ordering in ORDERINGS:
            ratio = t[ordering] / t["skimage"]
            target = None
            if has_target:
                limit = SPEED_TARGETS[ordering]
                target = report.verdict(f"{case} {ordering}", f"<= {limit:g}x", ratio <= limit)
            report.speed.row(case, ordering, t[ordering], t["skimage"], f"{ratio:.1f}x", target)
    # a batch of small crops in one transform against one skimage call per crop
    n, side = SMALL_BATCH
    corners = np.random.default_rng(0).integers(0, src.shape[0] - side + 1, (n, 2))
    crops = np.stack([src[r : r + side, c : c + side] for r, c in corners])
    matchers = {o: _fitted(ref, o) for o in ORDERINGS}
    fns = {o: (lambda m=m: m.transform(crops)) for o, m in matchers.items()}
    fns["skimage"] = lambda: [_sk(crop, ref) for crop in crops]
    t = interleaved_medians(fns, repeat=repeat, warmup=warmup)
    case = f"uint8 RGB batch {n}x{side}x{side} (crops), one transform"
    for ordering in ORDERINGS:
        ratio = t[ordering] / t["skimage"]
        report.speed.row(case, ordering, t[ordering], t["skimage"], f"{ratio:.1f}x", None)
    # one large photo, on one thread and with n_jobs threads (an RGB photo's channels at
    # once, a grey one's keys and buckets)
    large = {"uint8 RGB": (src, ref), "uint8 grey": (_photo("camera", size), _photo("moon", size))}
    for kind, (image, reference) in large.items():
        side = LARGE * image.shape[0]
        big = cv2.resize(image, (side, side), interpolation=cv2.INTER_LINEAR)
        fns = {"skimage": lambda big=big, reference=reference: _sk(big, reference)}
        for ordering in ORDERINGS:
            for n_jobs in (None, N_JOBS):
                m = HistogramMatcher(method="exact", ordering=ordering, n_jobs=n_jobs)
                m.fit([reference])
                fns[ordering, n_jobs] = lambda m=m, big=big: m.transform([big])
        t = interleaved_medians(fns, repeat=max(3, repeat // 3), warmup=1)
        for ordering in ORDERINGS:
            for n_jobs in (None, N_JOBS):
                threads = f", n_jobs={n_jobs}" if n_jobs else ""
                case = f"{kind} {side}x{side} (upsampled){threads}"
                ratio = t[ordering, n_jobs] / t["skimage"]
                report.speed.row(
                    case, ordering, t[ordering, n_jobs], t["skimage"], f"{ratio:.1f}x", None
                )


def bench_images(report: Report, size: int | None, repeat: int, warmup: int) -> None:
    """Per sample image: exact transform time and tied share for both orderings."""
    references = {3: _photo("astronaut", size), 2: _grey_reference(size)}
    for name in RGB_IMAGES + GREY_IMAGES:
        image = _photo(name, size)
        reference = references[3 if image.ndim == 3 else 2]
        matchers = {o: _fitted(reference, o) for o in ORDERINGS}
        x = image[None]
        t = interleaved_medians(
            {o: (lambda m=m, x=x: m.transform(x)) for o, m in matchers.items()},
            repeat=repeat,
            warmup=warmup,
        )
        tied = {
            o: max(1.0 - strict_ordering_ratio(c, o) for c in _channels(image)) for o in ORDERINGS
        }
        met = tied["variational"] <= TIE_TARGET and tied["variational"] <= tied["local_means"]
        label = f"variational <= {TIE_TARGET:.1%} and <= local_means"
        shape = "x".join(map(str, image.shape))
        report.ties.row(
            f"{name} ({shape})",
            t["local_means"],
            t["variational"],
            f"{tied['local_means']:.3%}",
            f"{tied['variational']:.3%}",
            report.verdict(f"ties {name}", label, met),
        )


def main(argv: Sequence[str] | None = None) -> Report:
    """Run the benchmark, print the tables and return the :class:`Report`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    args = parser.parse_args(argv)
    repeat, warmup = (3, 1) if args.quick else (15, 2)
    report = Report()
    bench_speed(report, args.size, repeat, warmup)
    bench_images(report, args.size, repeat, warmup)
    print(f"histmatch_ml exact benchmark ({machine()}; medians of {repeat} interleaved runs)\n")
    print(report.speed.markdown())
    print(
        "\nPer sample image: time of one exact transform per ordering, and the share of "
        "pixels left tied (worst channel of RGB)\n"
    )
    print(report.ties.markdown())
    print_targets(report.verdicts)
    return report


if __name__ == "__main__":
    main()
