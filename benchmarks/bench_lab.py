"""Joint CIELAB matching: ``HistogramMatcher(method="lab")`` against its peers.

Times, in one run and on the same inputs (skimage ``astronaut`` 512x512 RGB
uint8 as the source, ``coffee`` 400x600 as the reference), interleaved:

* a fitted ``lab`` matcher's ``transform`` (joint, default 20 iterations; also
  10 and 40, marginal LAB, and with regrain) and the one-shot
  ``match_histograms(method="lab")`` (fit + transform);
* ``skimage.exposure.match_histograms`` per channel, the speed yardstick;
* the joint colour-transfer peers, when installed: ``color-matcher``
  ``hm-mkl-hm`` and ``python-color-transfer``'s IDT (``pdf_transfer``, with
  and without its regrain).

Quality columns: the sliced Wasserstein-1 distance between the output's and
the reference's CIELAB pixels (``metrics.sliced_wasserstein``, 64 seeded
directions, independent of the matcher's), and the grain trade-off: the mean
structure term of SSIM, ``(s_xy + C3) / (s_x s_y + C3)`` with an 11x11
Gaussian window (sigma 1.5) and ``C3 = (0.03 * 100)**2 / 2``, between the
source's and the output's L channel (1 = the source's structure intact).
The last rows repeat the quality targets on more natural image pairs.

Run::

    python benchmarks/bench_lab.py                  # the full run (about a minute)
    python benchmarks/bench_lab.py --quick          # fewer repeats
    python benchmarks/bench_lab.py --quick --size 64   # tiny crops (smoke test)
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from _harness import Table, interleaved_medians, machine
from skimage import data
from skimage.exposure import match_histograms as sk_match

from histmatch_ml import HistogramMatcher, _color, match_histograms
from histmatch_ml.metrics import sliced_wasserstein

#: targets of the issue: time ratio to skimage, and quality ratios
SKIMAGE_TIME_TARGET = 30.0
PER_CHANNEL_TARGET = 0.6
MARGINAL_TARGET = 0.5
#: more (source, reference) pairs for the quality rows
QUALITY_PAIRS = (
    ("chelsea", "rocket"),
    ("coffee", "astronaut"),
    ("rocket", "chelsea"),
    ("immunohistochemistry", "coffee"),
)
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
    verdicts: dict[str, bool] = field(default_factory=dict)


def main(argv: Sequence[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--size", type=int, default=None, help="crop images to this square")
    args = parser.parse_args(argv)
    repeat = 5 if args.quick else 21

    src, ref = _photo("astronaut", args.size), _photo("coffee", args.size)
    h, w = src.shape[:2]
    matchers = {
        "lab transform, joint, n_iter=20 (default)": HistogramMatcher("lab", random_state=0),
        "lab transform, joint, n_iter=10": HistogramMatcher("lab", n_iter=10, random_state=0),
        "lab transform, joint, n_iter=40": HistogramMatcher("lab", n_iter=40, random_state=0),
        "lab transform, marginal": HistogramMatcher("lab", lab_mode="marginal", random_state=0),
        "lab transform, joint + regrain": HistogramMatcher("lab", regrain=True, random_state=0),
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
    ref_lab = matchers["lab transform, joint, n_iter=20 (default)"]
    funcs["lab transform, joint, float32 /255 input"] = lambda img: ref_lab.transform(
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
        "target",
    )
    report = Report(table)
    table.row(
        "input (no matching)", None, None, f"{sliced_wasserstein(src, ref):.3f}", "1.000", None
    )
    outputs = {}
    for name, f in funcs.items():
        out = f(src)
        if name.startswith("lab fit"):
            table.row(name, times[name], f"{times[name] / t_sk:.1f}x", None, None, None)
            continue
        if out.dtype != np.uint8:  # the float32 row: back to codes for the measures
            out = np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
        outputs[name] = out
        dist = sliced_wasserstein(out, ref)
        target = None
        if name.startswith("lab transform, joint, n_iter=20"):
            verdicts = {
                f"<= {SKIMAGE_TIME_TARGET:.0f}x skimage": times[name] <= SKIMAGE_TIME_TARGET * t_sk
            }
            for peer in ("color-matcher hm-mkl-hm", "python-color-transfer IDT"):
                if peer in times:
                    verdicts[f"faster than {peer}"] = times[name] < times[peer]
            report.verdicts.update(verdicts)
            target = "; ".join(f"{k}: {'met' if v else 'MISSED'}" for k, v in verdicts.items())
        table.row(
            name,
            times[name],
            f"{times[name] / t_sk:.1f}x",
            f"{dist:.3f}",
            f"{structure_term(src, out):.3f}",
            target,
        )

    # the quality targets: joint lab against per_channel RGB and marginal LAB
    pairs = [("astronaut", "coffee"), *QUALITY_PAIRS]
    for s_name, r_name in pairs:
        s, r = _photo(s_name, args.size), _photo(r_name, args.size)
        joint = match_histograms(s, r, method="lab", random_state=0)
        d_joint = sliced_wasserstein(joint, r)
        d_pc = sliced_wasserstein(match_histograms(s, r), r)
        d_marg = sliced_wasserstein(
            match_histograms(s, r, method="lab", lab_mode="marginal", random_state=0), r
        )
        ok_pc, ok_marg = d_joint <= PER_CHANNEL_TARGET * d_pc, d_joint <= MARGINAL_TARGET * d_marg
        report.verdicts[f"{s_name}->{r_name} vs per_channel"] = ok_pc
        report.verdicts[f"{s_name}->{r_name} vs marginal"] = ok_marg
        table.row(
            f"quality {s_name} -> {r_name}: lab joint (per_channel {d_pc:.3f}, "
            f"marginal {d_marg:.3f}, input {sliced_wasserstein(s, r):.3f})",
            None,
            None,
            f"{d_joint:.3f}",
            f"{structure_term(s, joint):.3f}",
            f"{d_joint / d_pc:.2f}x per_channel (<= {PER_CHANNEL_TARGET}): "
            f"{'met' if ok_pc else 'MISSED'}; {d_joint / d_marg:.2f}x marginal "
            f"(<= {MARGINAL_TARGET}): {'met' if ok_marg else 'MISSED'}",
        )

    print(
        f"uint8 RGB {h}x{w} astronaut -> coffee; {machine()}; medians of {repeat} "
        f"interleaved runs\n"
    )
    print(table.markdown())
    return report


if __name__ == "__main__":
    main()
