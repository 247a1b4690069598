"""Distances used to measure matching quality."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from histmatch_ml.metrics import histogram_distance, wasserstein_1d


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_wasserstein_1d_matches_scipy(dtype):
    rng = np.random.default_rng(0)
    u = rng.integers(-50 if dtype == np.int16 else 0, 200, 500).astype(dtype)
    v = rng.integers(0, 255, 333).astype(dtype)
    assert wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), rel=1e-9)


def test_wasserstein_zero_on_identical_and_shift():
    x = np.arange(100, dtype=np.float64)
    assert wasserstein_1d(x, x) == 0
    assert wasserstein_1d(x, x + 2.5) == pytest.approx(2.5)
    with pytest.raises(ValueError, match="empty"):
        wasserstein_1d([], [1.0])


def test_histogram_distance_per_channel_and_masks():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[..., 1] = 4
    np.testing.assert_allclose(histogram_distance(a, b), [0, 4, 0])
    mask = np.zeros((10, 10), bool)
    mask[0] = True
    c = b.copy()
    c[1:] = 100
    np.testing.assert_allclose(histogram_distance(c, b, mask=mask), [0, 0, 0])
    with pytest.raises(ValueError, match="channels"):
        histogram_distance(a, a[..., 0])
