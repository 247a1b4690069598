"""method="per_channel": the kernel's paths (8/16-bit tables, the float grid, floats of
8-bit levels), each against its documented contract."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import load
from histmatch_ml import HistogramMatcher, match_histograms
from histmatch_ml.methods import per_channel
from histmatch_ml.methods._base import row_bands
from histmatch_ml.metrics import histogram_distance


def _grid_only(monkeypatch, matcher, images, **kwargs):
    """``matcher.transform`` with the 8-bit-levels shortcut of the float path turned off."""
    from histmatch_ml.methods import per_channel

    with monkeypatch.context() as patch:
        patch.setattr(per_channel, "byte_levels", lambda image, check: None)
        return matcher.transform(images, **kwargs)


def _exact_midpoint_match(x, p, v):
    """Sort-based reference answer: Q_ref at each distinct value's midpoint CDF."""
    _, inverse, counts = np.unique(x.ravel(), return_inverse=True, return_counts=True)
    cdf = (np.cumsum(counts) - counts / 2) / x.size
    return np.interp(cdf, p, v)[inverse.ravel()].reshape(x.shape)


def test_uint16_full_range_and_int16_negative_are_fast_and_exact():
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 65536, (256, 256), dtype=np.uint16)
    ref[0, 0], ref[0, 1] = 0, 65535
    m = HistogramMatcher().fit([ref])
    assert m.reference_["histograms"].shape == (1, 65536)
    assert m.reference_["histograms"].sum() == ref.size
    signed = (ref.astype(np.int32) - 32768).astype(np.int16)
    ms = HistogramMatcher().fit([signed])
    out = ms.transform([signed])[0]
    assert out.dtype == np.int16 and out.min() < -32000
    np.testing.assert_array_equal(out, signed)  # its own histogram: unchanged


@pytest.mark.parametrize("kind", ["quantised", "continuous"])
def test_float_grid_path_accuracy(kind, astronaut, coffee):
    """Documented accuracy: W1 to the exact sort-based answer <= 4e-4 of the range."""
    from histmatch_ml import _reference

    rng = np.random.default_rng(7)
    src, ref = astronaut.astype(np.float32), coffee.astype(np.float32)
    if kind == "continuous":
        src = src + rng.random(src.shape, dtype=np.float32)
        ref = ref + rng.random(ref.shape, dtype=np.float32)
    src, ref = src / 256, ref / 256
    m = HistogramMatcher().fit([ref])
    out = m.transform([src])[0]
    for c in range(3):
        p, v = _reference.quantile_points(m.tables_, c)
        exact = _exact_midpoint_match(src[:, :, c].astype(np.float64), p, v)
        w1 = histogram_distance(out[:, :, c], exact.astype(np.float32))[0]
        assert w1 <= 4e-4 * (v[-1] - v[0])


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_strength_on_dense_16_bit_histograms(dtype):
    # most of the 65,536 levels occupied: the lookup table is computed whole, in place
    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    src = rng.integers(info.min, info.max, size=(300, 300), endpoint=True).astype(dtype)
    ref = np.clip(rng.normal(0, 3000, size=(200, 200)), info.min, info.max).astype(dtype)
    full = match_histograms(src, ref).astype(np.float64)
    half = match_histograms(src, ref, strength=0.5).astype(np.float64)
    assert np.abs(half - (0.5 * src + 0.5 * full)).max() <= 1.0
    np.testing.assert_array_equal(match_histograms(src, ref, strength=0.0), src)
    order = np.argsort(src, axis=None)
    assert (np.diff(half.ravel()[order]) >= 0).all()


# ------------------------------------------------------------ float grid: ranges and threads
@pytest.mark.parametrize(
    ("offset", "width", "dtype"),
    [
        (1e6, 100.0, np.float32),  # far from zero: cells come from x - min, not x * scale
        (5e6, 100.0, np.float32),
        (-3e38, 6e38, np.float32),  # wider than float32's own range
        (-1e308, 1.5e308, np.float64),  # wider than float64's range
        (0.0, 1e-42, np.float32),  # a subnormal range
        (1.0, 1e-6, np.float64),
    ],
)
def test_float_ranges_far_from_zero_wide_or_tiny_are_matched(offset, width, dtype):
    rng = np.random.default_rng(3)
    u = rng.random((64, 48))
    src = (offset + u * width).astype(dtype)
    ref = rng.normal(size=(40, 40)).astype(dtype)
    out = match_histograms(src, ref)
    assert out.dtype == dtype and np.isfinite(out).all()
    order = np.argsort(src, axis=None, kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()  # monotone
    assert ref.min() <= out.min() and out.max() <= ref.max()
    # equal inputs stay equal, and distinct far-apart inputs are told apart
    assert len(np.unique(out)) >= min(len(np.unique(src)), 100) // 2


def test_values_piled_at_the_extremes_keep_their_own_output():
    # a black border and clipped highlights, with the tails blurring leaves next to them:
    # the extremes get their own grid cells, so they are not merged with their tails
    rng = np.random.default_rng(11)
    body = rng.random(4000)
    low_tail = rng.uniform(1e-7, 1e-5, 1000)  # (within 2**-10 of a cell they would share)
    high_tail = 1 - rng.uniform(1e-6, 1e-5, 1000)
    src = np.concatenate([np.zeros(3000), low_tail, body, high_tail, np.ones(3000)])
    src = src.astype(np.float32).reshape(120, 100)
    ref = rng.random((100, 100)).astype(np.float32)
    out = match_histograms(src, ref)
    zeros, ones = out[src == 0], out[src == 1]
    assert np.ptp(zeros) == 0 and np.ptp(ones) == 0
    assert out[(src > 0) & (src <= 1e-5)].min() > zeros[0]
    assert out[(src < 1) & (src >= 1 - 1e-5)].max() < ones[0]
    # each pile sits at its own midpoint CDF of the reference
    n = src.size
    np.testing.assert_allclose(zeros[0], np.quantile(ref, 1500 / n, method="hazen"), atol=0.02)
    np.testing.assert_allclose(ones[0], np.quantile(ref, 1 - 1500 / n, method="hazen"), atol=0.02)


# ------------------------------------------------------------ floats holding 8-bit levels
BYTE_CONVERSIONS = {
    "/ 255 float32 (ToTensor)": lambda a: a.astype(np.float32) / np.float32(255),
    "* (1/255) float32 (img_as_float32)": lambda a: a.astype(np.float32) * np.float32(1 / 255),
    "/ 255 float64": lambda a: a / 255.0,
    "* (1/255) float64 (img_as_float)": lambda a: a * (1 / 255),
    "cast to float32, 0..255": lambda a: a.astype(np.float32),
}


@pytest.mark.parametrize("convert", list(BYTE_CONVERSIONS.values()), ids=list(BYTE_CONVERSIONS))
@pytest.mark.parametrize("grey", [False, True])
def test_float_images_of_8_bit_levels_match_exactly_as_on_the_grid(
    convert, grey, monkeypatch, astronaut, coffee
):
    from histmatch_ml.methods.per_channel import byte_levels

    src, ref = convert(astronaut), convert(coffee)
    if grey:
        src, ref = np.ascontiguousarray(src[..., 1:2]), np.ascontiguousarray(ref[..., 1:2])
    found = byte_levels(src, np.empty_like(src))  # the shortcut is taken
    assert found is not None and found[0].shape == src.shape and found[1].dtype == src.dtype
    mask = np.random.default_rng(5).random(src.shape[:2]) < 0.6
    m = HistogramMatcher().fit([ref])
    for strength in (1.0, 0.4):
        m.set_params(strength=strength)
        for masks in (None, mask[None]):
            fast = m.transform(src[None], mask=masks)
            grid = _grid_only(monkeypatch, m, src[None], mask=masks)
            assert fast.dtype == src.dtype
            np.testing.assert_array_equal(fast, grid)
            if masks is not None:
                np.testing.assert_array_equal(fast[0][~mask], src[~mask])


@pytest.mark.parametrize("n_channels", [2, 4])
def test_float_8_bit_levels_with_constant_channels_and_any_count_match_as_on_the_grid(
    n_channels, monkeypatch, astronaut, coffee
):
    from histmatch_ml.methods.per_channel import byte_levels

    def with_channels(rgb):
        image = np.zeros((*rgb.shape[:2], n_channels), dtype=np.float32)
        image[..., :2] = rgb[..., :2].astype(np.float32) / 255  # the rest stays 0: constant
        return image

    src, ref = with_channels(astronaut), with_channels(coffee)
    ref[..., 2:] = np.float32(1 / 255) * np.arange(ref.shape[1])[None, :, None] % 1
    assert byte_levels(src, np.empty_like(src)) is not None
    m = HistogramMatcher(strength=0.7).fit([ref])
    fast = m.transform(src[None])
    np.testing.assert_array_equal(fast, _grid_only(monkeypatch, m, src[None]))
    if n_channels == 4:
        assert np.ptp(fast[..., 2]) == 0  # a constant channel stays constant


def test_float_images_not_of_8_bit_levels_take_the_grid(astronaut):
    from histmatch_ml.methods.per_channel import byte_levels

    levels = astronaut.astype(np.float32) / 255
    check = np.empty_like(levels)
    assert byte_levels(levels, check) is not None
    cases = {}
    for name, (row, col, value) in {
        "one value off by an ulp": (300, 301, np.nextafter(levels[300, 301, 1], np.float32(2))),
        "NaN": (300, 301, np.nan),
        "infinity": (300, 301, np.inf),
        "a negative level": (300, 301, -levels[300, 301, 1] - 1 / 255),
        "NaN in a sampled row": (0, 5, np.nan),
    }.items():
        bad = levels.copy()
        bad[row, col, 1] = value
        cases[name] = bad
    cases["continuous values"] = np.random.default_rng(0).random(levels.shape, dtype=np.float32)
    cases["levels of 1 / 256"] = astronaut.astype(np.float32) / 256
    for name, image in cases.items():
        assert byte_levels(image, check) is None, name
    assert byte_levels(np.asfortranarray(levels), check) is None  # not contiguous


def test_float_8_bit_levels_with_an_ulp_off_are_still_matched(astronaut, coffee):
    # the shortcut turns the image down; the grid matches it, monotone as ever
    src = astronaut.astype(np.float32) / 255
    src[300, 301, 1] = np.nextafter(src[300, 301, 1], np.float32(2))
    out = HistogramMatcher().fit([coffee.astype(np.float32) / 255]).transform([src])[0]
    order = np.argsort(src[..., 1], axis=None, kind="stable")
    assert (np.diff(out[..., 1].ravel()[order]) >= 0).all()


# ------------------------------------------------------------ large images: bands, memory
def test_histograms_of_images_beyond_exact_float32_counts_are_summed_by_bands(monkeypatch):
    from histmatch_ml import _reference

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (301, 203, 3), dtype=np.uint8)
    mask = rng.random(image.shape[:2]) < 0.7
    plane16 = rng.integers(0, 65536, (301, 203), dtype=np.uint16)
    expected = np.stack([np.bincount(image[..., c][mask], minlength=256) for c in range(3)])
    expected16 = np.bincount(plane16.ravel(), minlength=65536)
    whole = _reference.uint8_histograms(image, mask)
    # bands of a few rows (as for images of more than 2**24 pixels), summed in int64
    monkeypatch.setattr(_reference, "EXACT_COUNTS", 4 * 203)
    banded = _reference.uint8_histograms(image, mask)
    assert banded.dtype == np.int64
    np.testing.assert_array_equal(banded, expected)
    np.testing.assert_array_equal(whole, expected)
    np.testing.assert_array_equal(_reference.level_counts(plane16, None, 65536), expected16)


@pytest.mark.parametrize("size", [512, 1024])
@pytest.mark.parametrize(("dtype", "bound"), [(np.uint8, 1.1), (np.float32, 1.5)])
def test_work_memory_is_one_channels(dtype, bound, size):
    """The peak (output included) stays within ``bound`` times the output's bytes: a float
    image is read by bands of rows and its tables computed by blocks (:func:`match_planes`)."""
    import tracemalloc

    import cv2

    src = cv2.resize(load("astronaut"), (size, size))
    ref = load("coffee")
    if dtype == np.float32:  # continuous values: the grid path
        src = cv2.GaussianBlur(src.astype(np.float32) / 255, (0, 0), 1.5)
        ref = cv2.GaussianBlur(ref.astype(np.float32) / 255, (0, 0), 1.5)
    m = HistogramMatcher().fit([ref])
    m.transform(src[None])
    tracemalloc.start()
    try:
        out = m.transform(src[None])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < bound * out.nbytes


# ------------------------------------------------------ float self-match and tails
def _alone_in_their_cells(image: np.ndarray) -> np.ndarray:
    """Flat mask of the pixels farther than a grid cell from every other value."""
    flat = image.ravel().astype(np.float64)
    cell = (flat.max() - flat.min()) / (per_channel.GRID_CELLS - 2)
    order = np.argsort(flat)
    gaps = np.diff(flat[order])
    apart = np.ones(flat.size, dtype=bool)
    apart[1:] &= gaps > 2 * cell
    apart[:-1] &= gaps > 2 * cell
    alone = np.empty(flat.size, dtype=bool)
    alone[order] = apart
    return alone


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_float_image_matched_to_itself_moves_at_most_one_grid_cell_and_its_tails_not(dtype):
    rng = np.random.default_rng(11)
    image = rng.normal(size=(1, 256, 256, 1)).astype(dtype)
    out = HistogramMatcher().fit(image).transform(image)
    span = float(image.max() - image.min())
    # the reference is exact; a grid cell's pixels share one output value
    assert np.abs(out - image).max() <= span / (per_channel.GRID_CELLS - 2)
    alone = _alone_in_their_cells(image)
    assert alone.sum() > 50  # (the tails, mostly)
    np.testing.assert_array_equal(out.ravel()[alone], image.ravel()[alone])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fine_grid_brings_a_float_self_match_within_1e_6_of_the_range(dtype):
    rng = np.random.default_rng(14)
    image = rng.normal(size=(1, 256, 256, 2)).astype(dtype)
    matcher = HistogramMatcher(grid_cells=2**20).fit(image)
    out = matcher.transform(image)
    span = image.max(axis=(0, 1, 2)) - image.min(axis=(0, 1, 2))
    assert (np.abs(out - image).max(axis=(0, 1, 2)) / span).max() <= 1e-6
    # the default grid: one cell of 1 / 65,534 of the range
    coarse = HistogramMatcher().fit(image).transform(image)
    assert (np.abs(coarse - image).max(axis=(0, 1, 2)) / span).max() > 1e-6


def test_tails_follow_the_reference_exactly():
    rng = np.random.default_rng(12)
    image = rng.normal(size=(1, 200, 300, 1)).astype(np.float32)
    reference = rng.lognormal(size=(1, 240, 250, 1)).astype(np.float32)
    out = HistogramMatcher().fit(reference).transform(image).ravel()
    order = np.argsort(image, axis=None)
    assert out[order[-1]] == reference.max() and out[order[0]] == reference.min()
    # the exact answer for every pixel alone in its grid cell (the tails): the
    # reference's Hazen quantile function at its midpoint CDF
    ranks = np.flatnonzero(_alone_in_their_cells(image)[order])
    assert ranks.min() == 0 and ranks.max() == image.size - 1 and len(ranks) > 50
    probs = (ranks + 0.5) / image.size
    exact = np.quantile(reference.astype(np.float64), probs, method="hazen")
    np.testing.assert_allclose(out[order[ranks]], exact, rtol=2e-7)


def test_float_references_fitted_in_parts_match_alike():
    rng = np.random.default_rng(13)
    refs = rng.gamma(2.0, size=(6, 40, 50, 3)).astype(np.float32)
    image = rng.normal(size=(2, 30, 30, 3)).astype(np.float32)
    whole = HistogramMatcher().fit(refs)
    parts = HistogramMatcher()
    for chunk in (refs[:1], refs[1:4], refs[4:]):
        parts.partial_fit(chunk)
    np.testing.assert_array_equal(parts.transform(image), whole.transform(image))


@pytest.mark.parametrize("masked", [False, True])
def test_a_nan_in_any_band_of_a_large_float_image_is_refused(masked):
    # (ranges are read band by band, or in one interleaved pass, above 2**16 pixels)
    image = np.random.default_rng(0).random((700, 700, 3), dtype=np.float32)
    image[650, 3, 1] = np.nan
    bands = row_bands(image.shape[:2], per_channel.MIN_BAND_PIXELS, per_channel.BAND_PIXELS)
    assert len(bands) > 1
    mask = np.ones(image.shape[:2], bool) if masked else None
    planes = np.ascontiguousarray(image.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="NaN"):
        per_channel._channel_ranges(image, lambda c, rows: planes[c][rows], mask, bands)


@pytest.mark.parametrize("n_jobs", [None, 2])
@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_uint8_images_matched_together_get_the_outputs_they_get_alone(
    monkeypatch, n_jobs, strength
):
    # the tables of a batch's uint8 images are computed together (match_uint8): every
    # image must come out as it does when it is transformed on its own, masks and all,
    # whatever the image's size, channels and histogram path (float32 or int64 counts)
    from histmatch_ml import _reference

    rng = np.random.default_rng(3)
    refs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    m = HistogramMatcher(strength=strength, n_jobs=n_jobs).fit(refs)
    shapes = [(16, 16), (33, 17), (300, 200), (5, 90), (64, 64), (1, 1)] * 3
    images = [
        rng.integers(0, 256, (*s, 3), dtype=np.uint8) // (1 + i % 4) for i, s in enumerate(shapes)
    ]
    masks = [rng.random(s) < 0.6 for s in shapes]
    for mask in masks:
        mask[0, 0] = True  # (a mask must select a pixel)
    monkeypatch.setattr(_reference, "EXACT_COUNTS", 300 * 40)  # the 300x200 image by bands
    monkeypatch.setattr(per_channel, "TOGETHER", 4)  # runs of 4 images
    together = m.transform(images, mask=masks)
    for image, mask, got in zip(images, masks, together):
        np.testing.assert_array_equal(got, m.transform([image], mask=[mask])[0])
    stacked = np.stack([im for im, s in zip(images, shapes) if s == (64, 64)])
    alone = [m.transform(im[None])[0] for im in stacked]
    np.testing.assert_array_equal(m.transform(stacked), np.stack(alone))
    grey = HistogramMatcher(strength=strength).fit([r[..., 0] for r in refs])
    greys = [im[..., 0] for im in images]
    for image, got in zip(greys, grey.transform(greys)):
        np.testing.assert_array_equal(got, grey.transform([image])[0])


@pytest.mark.parametrize("strength", [1.0, 0.6])
def test_uint8_tensors_matched_together_get_the_outputs_they_get_alone(monkeypatch, strength):
    # a batch of channels-first uint8 tensors has its tables computed together
    # (match_uint8_planes, in runs of TOGETHER): every image as when it is transformed on
    # its own, and as its (H, W, C) array is, masks and all
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    refs = [rng.integers(0, 256, (40, 50, 3), dtype=np.uint8) for _ in range(2)]
    m = HistogramMatcher(strength=strength).fit(refs)
    arrays = (
        rng.integers(0, 256, (7, 24, 20, 3), dtype=np.uint8)
        // np.arange(1, 8)[:, None, None, None]
    )
    arrays = arrays.astype(np.uint8)
    batch = torch.from_numpy(np.ascontiguousarray(arrays.transpose(0, 3, 1, 2)))
    masks = rng.random((7, 24, 20)) < 0.6
    masks[:, 0, 0] = True
    monkeypatch.setattr(per_channel, "TOGETHER", 3)  # runs of 3 images
    for kwargs in ({}, {"mask": masks}):
        together = m.transform(batch, **kwargs)
        for k in range(len(arrays)):
            alone = {"mask": masks[k : k + 1]} if kwargs else {}
            np.testing.assert_array_equal(
                together[k].numpy(), m.transform(batch[k : k + 1], **alone)[0].numpy()
            )
            as_array = m.transform(arrays[k : k + 1], **alone)[0]
            np.testing.assert_array_equal(together[k].numpy().transpose(1, 2, 0), as_array)
