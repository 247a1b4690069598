"""Distances used to measure matching quality."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import wasserstein_distance

from histmatch_ml.metrics import histogram_distance, speckle, wasserstein_1d


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


# ------------------------------------------------------------------------ speckle
def _speckle_by_hand(image, source, block, fraction):
    """The documented definition, with explicit loops over blocks and 3x3 windows."""
    img = image.astype(np.float64).reshape(*image.shape[:2], -1)
    src = source.astype(np.float64).reshape(*source.shape[:2], -1)
    grey = src @ [0.299, 0.587, 0.114] if src.shape[2] == 3 else src.mean(axis=2)
    padded = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = img.shape[:2]
    windows = np.stack([padded[i : i + h, j : j + w] for i in range(3) for j in range(3)])
    deviation = np.abs(img - np.median(windows, axis=0)).mean(axis=2)
    scores, values = [], []
    for bi in range(h // block):
        for bj in range(w // block):
            rows, cols = slice(bi * block, (bi + 1) * block), slice(bj * block, (bj + 1) * block)
            scores.append(grey[rows, cols].std())
            values.append(deviation[rows, cols].mean())
    keep = np.argsort(scores, kind="stable")[: max(1, int(np.ceil(fraction * len(scores))))]
    return float(np.mean(np.array(values)[keep]))


@settings(max_examples=25, deadline=None)
@given(
    st.integers(0, 2**31 - 1),
    st.sampled_from([1, 3]),
    st.sampled_from([4, 8]),
    st.sampled_from([0.2, 0.5, 1.0]),
)
def test_speckle_follows_its_definition(seed, channels, block, fraction):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(8, 30)), int(rng.integers(8, 30)), channels)
    source = rng.integers(0, 256, shape).astype(np.uint8)
    source[: shape[0] // 2] //= 16  # a flatter half
    image = rng.integers(0, 256, shape).astype(np.uint8)
    if channels == 1:
        source, image = source[..., 0], image[..., 0]
    got = speckle(image, source, block_size=block, fraction=fraction)
    assert got == pytest.approx(_speckle_by_hand(image, source, block, fraction), rel=1e-5)


def test_speckle_measures_the_flat_blocks_of_the_source():
    rng = np.random.default_rng(0)
    source = np.full((64, 64, 3), 100, np.uint8)
    source[:, 32:] = rng.integers(0, 256, (64, 32, 3))  # the right half is busy
    assert speckle(source) == 0.0  # its flattest fifth is the flat half
    out = source.copy()
    out[:, :32] += rng.integers(0, 2, (64, 32, 3), dtype=np.uint8) * 8  # speckle where flat
    assert speckle(out, source) > 2.0
    # noise only where the source is busy does not count
    busy = source.copy()
    busy[:, 32:] = rng.integers(0, 256, (64, 32, 3))
    assert speckle(busy, source) == 0.0


def test_speckle_units_and_inputs():
    from PIL import Image

    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (40, 48, 3)).astype(np.uint8)
    s8 = speckle(img)
    assert speckle(img.astype(np.float32) / 255) == pytest.approx(s8 / 255, rel=1e-5)
    assert speckle(Image.fromarray(img)) == pytest.approx(s8)
    low = img // 2
    assert speckle(low + np.uint8(10)) == pytest.approx(speckle(low))  # offsets do not count


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"source": np.zeros((10, 12, 3), np.uint8)}, "same height and width"),
        ({"block_size": 0}, "block_size"),
        ({"block_size": 64}, "at least one"),
        ({"fraction": 0.0}, "fraction"),
        ({"fraction": 1.5}, "fraction"),
    ],
)
def test_speckle_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        speckle(np.zeros((16, 16, 3), np.uint8), **kwargs)
