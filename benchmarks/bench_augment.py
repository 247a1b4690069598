"""Augmentation benchmark: ``RandomHistogramMatching`` per call against its peers.

Times, in one run and on the same inputs (interleaved, so machine load hits
every side alike), one call of a fitted ``RandomHistogramMatching`` (p=1,
strength drawn from (0.5, 1.0), three references) against one
``HistogramMatcher.transform`` of the same image (the cost of a single
match, the floor a random augmentation should stay close to) and against
albumentations' ``HistogramMatching`` given the same three reference images
(it picks one, resizes it and recomputes its histogram at every call).

Source: skimage ``astronaut`` (512x512 RGB); references: ``coffee``,
``chelsea``, ``rocket``. The crop rows match 32x32, 64x64 and 128x128 crops
of the source to the whole references, where a call's fixed costs dominate,
and the batch row 256 of those 32x32 crops as one CPU ``(N, 3, H, W)`` tensor
(albumentations: one call per crop).
Targets (issue 6, uint8 RGB 512x512): per call
<= 1.5x ``HistogramMatcher.transform`` and >= 2x faster than albumentations.
Run::

    python benchmarks/bench_augment.py           # the full run (under a minute)
    python benchmarks/bench_augment.py --quick   # fewer repeats
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence

import numpy as np
from _harness import Table, common_arguments, interleaved_medians, machine, print_targets
from skimage import data

from histmatch_ml import HistogramMatcher, RandomHistogramMatching

#: per-call time over one HistogramMatcher.transform, at most
MATCHER_TARGET = 1.5
#: speed-up over albumentations HistogramMatching, at least
ALBUMENTATIONS_TARGET = 2.0
REFERENCES = ("coffee", "chelsea", "rocket")
#: sides of the small crops matched to the whole references (no target: fixed costs)
CROP_SIZES = (32, 64, 128)
#: the CPU tensor batch of crops: images, side (albumentations: one call per crop)
TENSOR_BATCH = (256, 32)
#: arguments of the smoke test (tests/test_benchmarks_smoke.py): a run of a few seconds
SMOKE_ARGS = ("--quick", "--size", "64")


def _photo(name: str, size: int | None) -> np.ndarray:
    img = getattr(data, name)()
    return img if size is None else np.ascontiguousarray(img[:size, :size])


def _albumentations(refs: list[np.ndarray]) -> tuple[Callable, Callable] | None:
    """albumentations ``HistogramMatching`` and our adapter, each in an ``A.Compose``."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network check on import
    try:
        import albumentations as A
    except ImportError:
        return None
    theirs = A.Compose([A.HistogramMatching(blend_ratio=(0.5, 1.0), p=1.0)], seed=0)
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    ours = A.Compose([aug.as_albumentations()], seed=0)
    return (
        lambda image: theirs(image=image, hm_metadata=refs)["image"],
        lambda image: ours(image=image)["image"],
    )


class Report:
    """The table, plus one ``(case, met)`` verdict per target."""

    def __init__(self) -> None:
        self.table = Table(
            "case",
            "RandomHistogramMatching",
            "HistogramMatcher.transform",
            "albumentations",
            "ours / matcher",
            "albumentations / ours",
            "target",
        )
        self.verdicts: list[tuple[str, bool]] = []

    def row(
        self,
        case: str,
        ours: float,
        matcher: float | None,
        alb: float | None,
        check: bool = False,
    ) -> None:
        r_matcher = None if matcher is None else ours / matcher
        r_alb = None if alb is None else alb / ours
        target = None
        if check:
            met = r_matcher is not None and r_matcher <= MATCHER_TARGET
            met_alb = r_alb is not None and r_alb >= ALBUMENTATIONS_TARGET
            self.verdicts += [(f"{case} vs matcher", met), (f"{case} vs albumentations", met_alb)]
            target = (
                f"<= {MATCHER_TARGET}x matcher: {'met' if met else 'MISSED'}; "
                f">= {ALBUMENTATIONS_TARGET}x albumentations: {'met' if met_alb else 'MISSED'}"
            )
        self.table.row(
            case,
            ours,
            matcher,
            alb,
            None if r_matcher is None else f"{r_matcher:.2f}x",
            None if r_alb is None else f"{r_alb:.1f}x",
            target,
        )


def bench(report: Report, size: int | None, repeat: int, warmup: int) -> None:
    src = _photo("astronaut", size)
    refs = [_photo(name, size) for name in REFERENCES]
    shape = "x".join(map(str, src.shape[:2]))
    alb = _albumentations(refs)

    # uint8 RGB: the target row, then the same call inside A.Compose
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    matcher = HistogramMatcher(strength=0.75).fit(refs[:1])
    fns: dict[str, Callable[[], object]] = {
        "ours": lambda: aug(src),
        "matcher": lambda: matcher.transform(src[None]),
    }
    if alb is not None:
        fns["alb"] = lambda: alb[0](src)
        fns["alb_ours"] = lambda: alb[1](src)
    t = interleaved_medians(fns, repeat=repeat, warmup=warmup)
    case = f"uint8 RGB {shape}, one call"
    report.row(case, t["ours"], t["matcher"], t.get("alb"), check=True)
    if alb is not None:
        report.row(f"uint8 RGB {shape}, inside A.Compose", t["alb_ours"], None, t["alb"])

    # small crops (the size of CIFAR images and of training patches), references whole:
    # where a call's fixed costs are most of its time
    if size is None:
        full = [_photo(name, None) for name in REFERENCES]
        aug_full = RandomHistogramMatching(p=1.0, random_state=0).fit(full)
        matcher_full = HistogramMatcher(strength=0.75).fit(full[:1])
        alb_full = _albumentations(full)
        for crop_size in CROP_SIZES:
            crop = np.ascontiguousarray(src[100 : 100 + crop_size, 200 : 200 + crop_size])
            fns = {
                "ours": lambda crop=crop: aug_full(crop),
                "matcher": lambda crop=crop: matcher_full.transform(crop[None]),
            }
            if alb_full is not None:
                fns["alb"] = lambda crop=crop: alb_full[0](crop)
            t = interleaved_medians(fns, repeat=repeat * 4, warmup=warmup)
            report.row(
                f"uint8 RGB {crop_size}x{crop_size} crop, one call",
                t["ours"],
                t["matcher"],
                t.get("alb"),
            )

    # torch CHW uint8 tensor (conversion in and out included)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tensor = torch.from_numpy(src).permute(2, 0, 1).contiguous()
        t = interleaved_medians(
            {"ours": lambda: aug(tensor), "matcher": lambda: matcher.transform(src[None])},
            repeat=repeat,
            warmup=warmup,
        )
        report.row(f"torch uint8 CHW {shape}, one call", t["ours"], t["matcher"], None)
        if size is None:  # a CPU batch of crops: one call, against albumentations per crop
            n, side = TENSOR_BATCH
            corners = np.random.default_rng(0).integers(0, src.shape[0] - side + 1, (n, 2))
            crops = np.stack([src[r : r + side, c : c + side] for r, c in corners])
            batch = torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))
            fns = {
                "ours": lambda: aug_full(batch),
                "matcher": lambda: matcher_full.transform(batch),
            }
            if alb_full is not None:
                fns["alb"] = lambda: [alb_full[0](crop) for crop in crops]
            t = interleaved_medians(fns, repeat=repeat, warmup=warmup)
            case = f"torch uint8 batch {n}x3x{side}x{side} (CPU), one call"
            report.row(case, t["ours"], t["matcher"], t.get("alb"))

    # uint16 (albumentations raises TypeError on it) and float32 (it quantises to 8 bits)
    src16, refs16 = src.astype(np.uint16) * 257, [r.astype(np.uint16) * 257 for r in refs]
    aug16 = RandomHistogramMatching(p=1.0, random_state=0).fit(refs16)
    m16 = HistogramMatcher(strength=0.75).fit(refs16[:1])
    t = interleaved_medians(
        {"ours": lambda: aug16(src16), "matcher": lambda: m16.transform(src16[None])},
        repeat=repeat,
        warmup=warmup,
    )
    report.row(f"uint16 RGB {shape}, one call", t["ours"], t["matcher"], None)

    srcf = src.astype(np.float32) / 255
    refsf = [r.astype(np.float32) / 255 for r in refs]
    augf = RandomHistogramMatching(p=1.0, random_state=0).fit(refsf)
    mf = HistogramMatcher(strength=0.75).fit(refsf[:1])
    fns = {"ours": lambda: augf(srcf), "matcher": lambda: mf.transform(srcf[None])}
    if alb is not None:
        albf = _albumentations(refsf)
        fns["alb"] = lambda: albf[0](srcf)
    t = interleaved_medians(fns, repeat=repeat, warmup=warmup)
    report.row(f"float32 RGB {shape} /255, one call", t["ours"], t["matcher"], t.get("alb"))


def main(argv: Sequence[str] | None = None) -> Report:
    """Run the benchmark, print the table and return the :class:`Report`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common_arguments(parser)
    args = parser.parse_args(argv)
    repeat, warmup = (5, 1) if args.quick else (41, 3)
    report = Report()
    bench(report, args.size, repeat, warmup)
    print(
        f"histmatch_ml augmentation benchmark; {machine()}; medians of {repeat} interleaved runs\n"
    )
    print(report.table.markdown())
    print_targets(report.verdicts)
    return report


if __name__ == "__main__":
    main()
