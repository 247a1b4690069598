"""histmatch_ml: histogram matching for machine learning.

A scikit-learn transformer that learns a reference distribution from a *set*
of images and matches any batch to it (per-channel, exact specification or
joint CIELAB), plus a one-shot function for a single image.
"""

from .augment import RandomHistogramMatching
from .functions import match_histograms
from .matcher import HistogramMatcher
from .preprocessing import ImageFlattener

__version__ = "0.1.0"

__all__ = [
    "HistogramMatcher",
    "ImageFlattener",
    "RandomHistogramMatching",
    "__version__",
    "match_histograms",
]
