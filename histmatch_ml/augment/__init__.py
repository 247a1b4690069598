"""Training-time augmentation: match each sample to a randomly chosen reference.

:class:`RandomHistogramMatching` learns one reference distribution per
reference image (or per group of images, e.g. per scanner or site) with a
:class:`~histmatch_ml.HistogramMatcher` and at every call picks one of them
and a blending strength at random.

Modules: ``_augmenter`` (the estimator), ``_torch`` (tensors in and out,
DataLoader workers) and ``_albumentations`` (the adapter), each imported
only for what it needs: torch and albumentations are never imported here.
"""

from __future__ import annotations

from typing import Any

from ._albumentations import albumentations_class
from ._augmenter import RandomHistogramMatching

__all__ = ["RandomHistogramMatching", "albumentations_class"]


def __getattr__(name: str) -> Any:
    # lets pickle and albumentations find the lazily created adapter class
    if name == "AlbumentationsRandomHistogramMatching":
        return albumentations_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
