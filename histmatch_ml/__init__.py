"""histmatch_ml: histogram matching for machine learning.

A scikit-learn transformer that learns a reference distribution from a *set*
of images and matches any batch to it (per-channel, exact specification or
joint CIELAB), plus a one-shot function for a single image.

The public names are imported on first use (PEP 562), so that
``import histmatch_ml`` and the ``histmatch`` command start without loading
scikit-learn until it is needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "BiasFieldCorrector": ".bias",
    "HistogramMatcher": ".matcher",
    "ImageFlattener": ".preprocessing",
    "RandomHistogramMatching": ".augment",
    "estimate_bias_field": ".bias",
    "match_histograms": ".functions",
}

__all__ = [
    "BiasFieldCorrector",
    "HistogramMatcher",
    "ImageFlattener",
    "RandomHistogramMatching",
    "__version__",
    "estimate_bias_field",
    "match_histograms",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from .augment import RandomHistogramMatching
    from .bias import BiasFieldCorrector, estimate_bias_field
    from .functions import match_histograms
    from .matcher import HistogramMatcher
    from .preprocessing import ImageFlattener


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
