"""Joint CIELAB matching: ``HistogramMatcher(method="lab")`` against its peers.

Times, in one run and on the same inputs (skimage ``astronaut`` 512x512 RGB
uint8 as the source, ``coffee`` 400x600 as the reference), interleaved:

* a fitted ``lab`` matcher's ``transform`` (joint with the defaults, 12
  smoothed iterations and 10 unsmoothed refinement iterations; also the
  smoothed transport alone at 20 iterations, 40 smoothed iterations, marginal
  LAB, and with regrain), the one-shot
  ``match_histograms(method="lab")`` (fit + transform) and a fitted
  ``luminance`` matcher's ``transform``;
* ``skimage.exposure.match_histograms`` per channel, the speed yardstick;
* the joint colour-transfer peers, when installed: ``color-matcher``
  ``hm-mkl-hm`` and ``python-color-transfer``'s IDT (``pdf_transfer``, with
  and without its regrain).

Quality columns: the sliced Wasserstein-1 distance between the output's and
the reference's CIELAB pixels (``metrics.sliced_wasserstein``, 64 seeded
directions, independent of the matcher's); the grain trade-off, as the mean
structure term of SSIM, ``(s_xy + C3) / (s_x s_y + C3)`` with an 11x11
Gaussian window (sigma 1.5) and ``C3 = (0.03 * 100)**2 / 2``, between the
source's and the output's L channel (1 = the source's structure intact); and
colour speckle (``metrics.speckle``: the mean over channels of ``|x -
median3x3(x)|`` over the flattest 20% of the source's 8x8 blocks, in 8-bit
codes), also as a ratio to per-channel matching's on the same pair (a smooth
monotone map with the same contrast gain). The quality rows repeat the
targets on five natural image pairs; the size rows time the default ``lab``
transform from 512x512 to 4096x4096 (the astronaut resized, bicubic) against
skimage on the same image.

Run::

    python benchmarks/bench_lab.py                  # the full run (about two minutes)
    python benchmarks/bench_lab.py --quick          # fewer repeats
    python benchmarks/bench_lab.py --quick --size 64   # tiny crops (smoke test)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from _harness import Table, interleaved_medians, machine, median_time, print_targets
from skimage import data
from skimage.exposure import match_histograms as sk_match

from histmatch_ml import HistogramMatcher, _color, match_histograms
from histmatch_ml.metrics import sliced_wasserstein, speckle

#: targets of the issue: time ratio to skimage, quality and speckle ratios to per_channel
SKIMAGE_TIME_TARGET = 10.0
PER_CHANNEL_TARGET = 0.4
SPECKLE_TARGET = 1.25
#: sides of the square images of the size rows (the full run)
SIZES = (512, 1024, 2048, 4096)
#: the (source, reference) pairs of the quality rows
QUALITY_PAIRS = (
    ("astronaut", "coffee"),
    ("chelsea", "rocket"),
    ("coffee", "astronaut"),
    ("rocket", "chelsea"),
    ("immunohistochemistry", "coffee"),
)
#: the smoothed transport alone, at the iterations that were its default
SMOOTHED_ONLY = "lab transform, joint, smoothed only: n_iter=20, n_refine=0"
#: the configurations of the quality rows (the targets are the defaults')
QUALITY_CONFIGS = {
    "default": {k: HistogramMatcher().get_params()[k] for k in ("n_iter", "n_refine")},
    "n_iter=20, n_refine=0": {"n_iter": 20, "n_refine": 0},
    "n_iter=40, n_refine=10": {"n_iter": 40, "n_refine": 10},
}
#: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
SMOKE_ARGS = ("--quick", "--size", "64")


def _photo(name: str, size: int | None) -> np.ndarray:
    img = getattr(data, name)()
    return img if size is None else np.ascontiguousarray(img[:size, :size])


def structure_term(source: np.ndarray, output: np.ndarray) -> float:
    """Mean SSIM structure term between the L channels of two RGB images."""
    la = _color.rgb_to_lab(source)[:, :, 0].astype(np.float64)
    lb = _color.rgb_to_lab(output)[:, :, 0].astype(np.float64)

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    ma, mb = blur(la), blur(lb)
    var_a = np.maximum(blur(la * la) - ma * ma, 0)
    var_b = np.maximum(blur(lb * lb) - mb * mb, 0)
    cov = blur(la * lb) - ma * mb
    c3 = (0.03 * 100) ** 2 / 2
    return float(np.mean((cov + c3) / (np.sqrt(var_a * var_b) + c3)))


def _peers(ref: np.ndarray) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The installed joint colour-transfer peers, as ``image -> uint8 image``."""
    peers = {}
    try:
        from color_matcher import ColorMatcher
    except ImportError:
        pass
    else:

        def hm_mkl_hm(img):
            out = ColorMatcher().transfer(src=img, ref=ref, method="hm-mkl-hm")
            return np.clip(np.rint(out), 0, 255).astype(np.uint8)

        peers["color-matcher hm-mkl-hm"] = hm_mkl_hm
    try:
        from python_color_transfer.color_transfer import ColorTransfer
    except ImportError:
        pass
    else:
        ct = ColorTransfer()
        peers["python-color-transfer IDT"] = lambda img: ct.pdf_transfer(
            img_arr_in=img, img_arr_ref=ref
        )
        peers["python-color-transfer IDT + regrain"] = lambda img: ct.pdf_transfer(
            img_arr_in=img, img_arr_ref=ref, regrain=True
        )
    return peers


@dataclass
class Report:
    """What :func:`main` measured: the table and the verdict of every target."""

    table: Table
    verdicts: list[tuple[str, bool]] = field(default_factory=list)

    def verdict(self, case: str, text: str, met: bool) -> str:
        self.verdicts.append((case, met))
        return f"{text}: {'met' if met else 'MISSED'}"


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--size", type=int, default=None, help="crop images to this square")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 21

    src, ref = _photo("astronaut", args.size), _photo("coffee", args.size)
    h, w = src.shape[:2]
    default = "lab transform, joint, n_iter=12, n_refine=10 (default)"
    matchers = {
        default: HistogramMatcher("lab", random_state=0),
        SMOOTHED_ONLY: HistogramMatcher("lab", n_iter=20, n_refine=0, random_state=0),
        "lab transform, joint, n_iter=40, n_refine=10": HistogramMatcher(
            "lab", n_iter=40, random_state=0
        ),
        "lab transform, marginal": HistogramMatcher("lab", lab_mode="marginal", random_state=0),
        "lab transform, joint + regrain": HistogramMatcher("lab", regrain=True, random_state=0),
        "luminance transform": HistogramMatcher("luminance"),
    }
    for m in matchers.values():
        m.fit(ref[None])
    per_channel = HistogramMatcher().fit(ref[None])
    funcs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "skimage match_histograms (per channel)": lambda img: sk_match(img, ref, channel_axis=-1),
        "histmatch_ml per_channel transform": lambda img: per_channel.transform(img[None])[0],
        **{name: (lambda img, m=m: m.transform(img[None])[0]) for name, m in matchers.items()},
        "lab one-shot match_histograms (fit + transform)": lambda img: match_histograms(
            img, ref, method="lab", random_state=0
        ),
        "lab fit on the reference": lambda img: HistogramMatcher("lab", random_state=0).fit(
            ref[None]
        ),
        **_peers(ref),
    }
    funcs["lab transform, joint, float32 /255 input"] = lambda img: matchers[default].transform(
        (img / 255).astype(np.float32)[None]
    )[0]

    times = interleaved_medians({k: (lambda f=f: f(src)) for k, f in funcs.items()}, repeat=repeat)
    t_sk = times["skimage match_histograms (per channel)"]

    table = Table(
        "case",
        "median time",
        "time / skimage",
        "sliced W1 to reference (CIELAB)",
        "SSIM structure of L vs source",
        "speckle (8-bit codes)",
        "speckle / per_channel's",
        "target",
    )
    report = Report(table)
    sp_pc = speckle(per_channel.transform(src[None])[0], src)
    table.row(
        "input (no matching)",
        None,
        None,
        f"{sliced_wasserstein(src, ref):.3f}",
        "1.000",
        f"{speckle(src):.2f}",
        f"{speckle(src) / sp_pc:.2f}x",
        None,
    )
    for name, f in funcs.items():
        out = f(src)
        if name.startswith("lab fit"):
            table.row(name, times[name], f"{times[name] / t_sk:.1f}x", *[None] * 5)
            continue
        if out.dtype != np.uint8:  # the float32 row: back to codes for the measures
            out = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
        target = None
        if name == default:
            target = report.verdict(
                f"{name} <= {SKIMAGE_TIME_TARGET:g}x skimage",
                f"<= {SKIMAGE_TIME_TARGET:g}x skimage",
                times[name] <= SKIMAGE_TIME_TARGET * t_sk,
            )
        sp = speckle(out, src)
        table.row(
            name,
            times[name],
            f"{times[name] / t_sk:.1f}x",
            f"{sliced_wasserstein(out, ref):.3f}",
            f"{structure_term(src, out):.3f}",
            f"{sp:.2f}",
            f"{sp / sp_pc:.2f}x",
            target,
        )

    # the quality targets on five pairs: distance and speckle against per_channel's
    for s_name, r_name in QUALITY_PAIRS:
        s, r = _photo(s_name, args.size), _photo(r_name, args.size)
        pc = match_histograms(s, r)
        d_pc, sp_pc = sliced_wasserstein(pc, r), speckle(pc, s)
        # one draw of rotations: the defaults use its first 22, the others all of them
        fitted = HistogramMatcher("lab", random_state=0, n_iter=40).fit(r[None])
        for config, kw in QUALITY_CONFIGS.items():
            out = fitted.set_params(**kw).transform(s[None])[0]
            d, sp = sliced_wasserstein(out, r), speckle(out, s)
            case = f"{s_name}->{r_name} lab {config}"
            target = None
            if config == "default":
                target = "; ".join(
                    [
                        report.verdict(
                            f"{case}: distance <= {PER_CHANNEL_TARGET}x per_channel",
                            f"distance {d / d_pc:.2f}x per_channel (<= {PER_CHANNEL_TARGET})",
                            d <= PER_CHANNEL_TARGET * d_pc,
                        ),
                        report.verdict(
                            f"{case}: speckle <= {SPECKLE_TARGET}x per_channel",
                            f"speckle {sp / sp_pc:.2f}x per_channel (<= {SPECKLE_TARGET})",
                            sp <= SPECKLE_TARGET * sp_pc,
                        ),
                    ]
                )
            table.row(
                f"quality {s_name} -> {r_name}: lab joint, {config}"
                f" (per_channel: W1 {d_pc:.3f}, speckle {sp_pc:.2f}; input W1 "
                f"{sliced_wasserstein(s, r):.3f})",
                None,
                None,
                f"{d:.3f} ({d / d_pc:.2f}x per_channel)",
                f"{structure_term(s, out):.3f}",
                f"{sp:.2f}",
                f"{sp / sp_pc:.2f}x",
                target,
            )

    # cost against size: the default transform from 512x512 up
    sizes = (args.size, 2 * args.size) if args.size else SIZES
    lab_fitted = matchers[default]
    per_megapixel = {}
    for side in sizes:
        img = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_CUBIC)
        reps = 3 if side >= 2048 else (5 if args.quick else 9)
        t_lab = median_time(lambda img=img: lab_fitted.transform(img[None]), repeat=reps, warmup=1)
        t_skimage = median_time(
            lambda img=img: sk_match(img, ref, channel_axis=-1), repeat=reps, warmup=1
        )
        per_megapixel[side] = t_lab / (side * side / 1e6)
        target = None
        if side == sizes[-1]:
            target = report.verdict(
                f"lab transform cost per pixel at {side}x{side} <= at {sizes[0]}x{sizes[0]}",
                f"linear in pixels: {per_megapixel[side] * 1e3:.0f} ms per megapixel <= "
                f"{per_megapixel[sizes[0]] * 1e3:.0f} at {sizes[0]}x{sizes[0]}",
                per_megapixel[side] <= per_megapixel[sizes[0]],
            )
        table.row(
            f"size {side}x{side}: lab transform (default) / skimage match_histograms "
            f"{t_skimage * 1e3:.1f} ms",
            t_lab,
            f"{t_lab / t_skimage:.1f}x",
            None,
            None,
            None,
            None,
            target or f"{per_megapixel[side] * 1e3:.0f} ms per megapixel",
        )

    print(
        f"uint8 RGB {h}x{w} astronaut -> coffee; {machine()}; medians of {repeat} "
        f"interleaved runs\n"
    )
    print(table.markdown())
    print_targets(report.verdicts)
    return report


if __name__ == "__main__":
    main()
