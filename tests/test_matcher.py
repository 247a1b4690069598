"""HistogramMatcher with method="per_channel": containers, dtypes, masks, strength, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from skimage import exposure

from conftest import GREY, RGB_PAIRS, load
from histmatch_ml import HistogramMatcher, _reference, match_histograms
from histmatch_ml.metrics import histogram_distance

# --------------------------------------------------------------------------- containers


def test_batch_4d_shape_dtype_and_no_input_mutation(astronaut, coffee):
    batch = np.stack([astronaut, astronaut[::-1]])
    before = batch.copy()
    out = HistogramMatcher().fit([coffee]).transform(batch)
    assert out.shape == batch.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(batch, before)
    assert not np.shares_memory(out, batch)


def test_grey_batch_3d(camera):
    refs = np.stack([camera, camera.T])
    out = HistogramMatcher().fit(refs).transform(camera[None, ::2, ::2])
    assert out.shape == (1, 256, 256) and out.dtype == np.uint8


def test_tabular_rows_and_n_features_in(camera):
    rows = camera[:8].astype(np.float64)  # 8 rows of 512 "pixels"
    m = HistogramMatcher().fit(rows)
    assert m.n_features_in_ == 512
    out = m.transform(rows[:3])
    assert out.shape == (3, 512) and out.dtype == np.float64
    with pytest.raises(ValueError, match="X has 10 features"):
        m.transform(rows[:, :10])


def test_list_of_different_sizes_returns_list(astronaut, coffee):
    images = [astronaut, coffee[:100, :77], astronaut[5:50, 9:200]]
    m = HistogramMatcher().fit(images[1:])
    out = m.transform(images)
    assert isinstance(out, list) and len(out) == 3
    for o, i in zip(out, images):
        assert o.shape == i.shape and o.dtype == i.dtype
    assert isinstance(m.transform(tuple(images)), tuple)


def test_list_of_grey_images_keeps_2d():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (20, 30), dtype=np.uint8), rng.random((5, 7))]
    out = HistogramMatcher().fit([images[0]]).transform([images[0]])
    assert out[0].shape == (20, 30)


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [("L", (40, 30), np.uint8), ("RGB", (40, 30, 3), np.uint8), ("I;16", (40, 30), np.uint16)],
)
def test_pil_in_pil_out(mode, shape, dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    src = rng.integers(0, info.max // 3, shape, dtype=dtype)
    ref = rng.integers(info.max // 2, info.max, (25, 35, *shape[2:]), dtype=dtype)
    src_img, ref_img = Image.fromarray(src), Image.fromarray(ref)
    assert src_img.mode == mode
    out = match_histograms(src_img, ref_img)
    assert isinstance(out, Image.Image)
    assert out.mode == mode and out.size == src_img.size
    arr = np.asarray(out)
    assert arr.min() >= ref.min() and arr.max() <= ref.max()


def test_pil_rgba_keeps_alpha():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 100, (20, 20, 4), dtype=np.uint8)
    ref = Image.fromarray(rng.integers(150, 256, (10, 10, 3), dtype=np.uint8))
    out = match_histograms(Image.fromarray(rgba, "RGBA"), ref)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out)[:, :, 3], rgba[:, :, 3])
    assert np.asarray(out)[:, :, :3].min() >= 150


def test_pil_palette_is_converted_and_channel_mismatch_is_clear():
    # palette images are read as RGB (the command line's table), so against a grey
    # reference the error is about channels, with the fix
    with pytest.raises(ValueError, match=r"image must have 1 channel.*convert colour"):
        match_histograms(Image.new("P", (4, 4)), Image.new("L", (4, 4)))
    assert match_histograms(Image.new("P", (4, 4)), Image.new("RGB", (4, 4))).mode == "RGB"


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_dtype_kept_and_range_of_reference(dtype):
    rng = np.random.default_rng(3)
    if np.dtype(dtype).kind == "f":
        src = rng.normal(0, 5, (2, 30, 40, 3)).astype(dtype)
        ref = rng.normal(100, 2, (30, 20, 3)).astype(dtype)
    else:
        info = np.iinfo(dtype)
        src = rng.integers(info.min, info.min + 1000, (2, 30, 40, 3)).astype(dtype)
        ref = rng.integers(info.max - 2000, info.max, (30, 20, 3), endpoint=True).astype(dtype)
    out = HistogramMatcher().fit([ref]).transform(src)
    assert out.dtype == dtype and out.shape == src.shape
    assert out.min() >= ref.min() and out.max() <= ref.max()


def test_floats_are_neither_clipped_nor_quantised():
    rng = np.random.default_rng(4)
    ref = rng.normal(5.0, 3.0, (64, 64)).astype(np.float32)  # far outside [0, 1]
    src = rng.random((64, 64)).astype(np.float32)
    out = match_histograms(src, ref)
    assert out.min() < -1 and out.max() > 10
    assert len(np.unique(out)) > 3000  # continuous, not 256 levels


def test_integer_outputs_are_rounded_not_floored():
    ref = np.array([[0, 1]], dtype=np.uint8).repeat(50, axis=0)
    src = np.array([[10, 20, 30, 40]], dtype=np.uint8).repeat(50, axis=0)
    out = match_histograms(src, ref)
    # the midpoint CDF of 20 and 30 is 3/8 and 5/8: 0.25 / 0.75 of the way -> 0 and 1
    np.testing.assert_array_equal(out[0], [0, 0, 1, 1])
    assert out.mean() == pytest.approx(ref.mean())


def test_wide_integers_are_matched_through_float64():
    rng = np.random.default_rng(6)
    ref = rng.integers(0, 2**31 - 1, (40, 40), dtype=np.int64)
    src = rng.permutation(1600).reshape(1, 40, 40).astype(np.int64)  # no ties
    out = HistogramMatcher().fit([ref]).transform(src)
    assert out.dtype == np.int64
    assert np.abs(np.sort(out[0].ravel()) - np.sort(ref.ravel())).max() < 2**31 * 3e-3


def test_object_array_of_numbers_is_converted():
    X = np.array([[1, 2, 3], [4, 5, 6]], dtype=object)
    out = HistogramMatcher().fit(X).transform(X)
    assert out.dtype == np.float64


def test_image_matched_to_itself_is_unchanged(astronaut):
    np.testing.assert_array_equal(match_histograms(astronaut, astronaut), astronaut)
    # float references keep a quantile sketch: exact up to its resolution
    f = astronaut.astype(np.float32) / 255
    out = match_histograms(f, f)
    assert histogram_distance(out, f).max() < 1e-4  # 0.03 of a grey level
    assert np.abs(out - f).max() <= 0.5 / 255
    np.testing.assert_allclose(match_histograms(f, f, n_quantiles=20000), f, atol=2e-3 / 255)


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize(("src_name", "ref_name"), RGB_PAIRS)
def test_closer_to_reference_than_skimage(src_name, ref_name):
    src, ref = load(src_name), load(ref_name)
    ours = match_histograms(src, ref)
    theirs = exposure.match_histograms(src, ref, channel_axis=-1)
    d_ours = histogram_distance(ours, ref).mean()
    d_theirs = histogram_distance(theirs, ref).mean()
    assert d_ours <= d_theirs
    assert d_ours < 0.75 * d_theirs  # midpoint CDF + rounding vs flooring


@pytest.mark.parametrize(("src_name", "ref_name"), RGB_PAIRS)
def test_float_path_close_to_reference(src_name, ref_name):
    src = load(src_name).astype(np.float32) / 255
    ref = load(ref_name).astype(np.float32) / 255
    ours = match_histograms(src, ref)
    theirs = exposure.match_histograms(src, ref, channel_axis=-1)
    assert histogram_distance(ours, ref).mean() <= histogram_distance(theirs, ref).mean()


def test_fit_on_set_pools_pixels(astronaut, coffee):
    """fit([a, b]) equals fit on one image holding the pixels of both."""
    a, b = astronaut[:100, :120], coffee[:100, :80]
    joined = np.concatenate([a, b], axis=1)
    m1 = HistogramMatcher().fit([a, b])
    m2 = HistogramMatcher().fit(joined[None])
    np.testing.assert_array_equal(m1.reference_["histograms"], m2.reference_["histograms"])
    assert m1.n_images_seen_ == 2 and m1.n_pixels_seen_ == a.shape[0] * 200


def test_each_image_of_a_batch_is_matched_on_its_own(astronaut, coffee):
    batch = np.stack([astronaut, astronaut // 2])
    m = HistogramMatcher().fit([coffee])
    out = m.transform(batch)
    np.testing.assert_array_equal(out[0], m.transform(batch[:1])[0])
    np.testing.assert_array_equal(out[1], m.transform(batch[1:])[0])
    # both end up with (nearly) the reference's histogram although inputs differ
    assert np.abs(out[0].astype(int) - out[1].astype(int)).mean() < 3


# ----------------------------------------------------------------------- partial_fit


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16])
def test_partial_fit_equals_fit_for_integers(dtype):
    rng = np.random.default_rng(8)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, info.max, (30, 40, 3), endpoint=True).astype(dtype)
    b = rng.integers(info.min, 0 if info.min < 0 else 100, (10, 20, 3)).astype(dtype)
    full = HistogramMatcher().fit([a, b])
    inc = HistogramMatcher().partial_fit([a]).partial_fit([b])
    np.testing.assert_array_equal(full.reference_["histograms"], inc.reference_["histograms"])
    src = rng.integers(info.min, info.max, (2, 9, 9, 3)).astype(dtype)
    np.testing.assert_array_equal(full.transform(src), inc.transform(src))
    assert inc.n_images_seen_ == 2 and inc.n_pixels_seen_ == full.n_pixels_seen_


def test_partial_fit_of_floats_equals_fit_exactly():
    """Float states merge exactly: the pooled values' distinct values and counts."""
    rng = np.random.default_rng(9)
    a = rng.gamma(2.0, 1.0, (60, 50)).astype(np.float64)
    b = rng.normal(8.0, 0.5, (30, 70))
    b[:5] = 3.0  # an atom
    full = HistogramMatcher().fit([a, b])
    inc = HistogramMatcher().partial_fit([a]).partial_fit([b])
    for key, value in full.reference_.items():
        np.testing.assert_array_equal(inc.reference_[key], value, err_msg=key)
    values, counts = np.unique(np.concatenate([a.ravel(), b.ravel()]), return_counts=True)
    p, v = _reference.quantile_points(inc.tables_, 0)
    np.testing.assert_array_equal(v, values)
    np.testing.assert_allclose(p, _reference.midpoint_cdf(counts))


def test_partial_fit_rejects_other_dtype_or_channels(astronaut):
    m = HistogramMatcher().partial_fit([astronaut])
    with pytest.raises(TypeError, match="dtype"):
        m.partial_fit([astronaut.astype(np.uint16)])
    with pytest.raises(ValueError, match="3 channel"):
        m.partial_fit([astronaut[:, :, 0]])


@settings(max_examples=25, deadline=None)
@given(
    a=hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12))),
    b=hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12))),
    src=hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12))),
)
def test_property_partial_fit_equals_fit(a, b, src):
    full = HistogramMatcher().fit([a, b])
    inc = HistogramMatcher().partial_fit([a]).partial_fit([b])
    np.testing.assert_array_equal(full.transform([src])[0], inc.transform([src])[0])


# ------------------------------------------------------------------ monotone / ties


@settings(max_examples=40, deadline=None)
@given(
    src=hnp.arrays(
        st.sampled_from([np.uint8, np.uint16, np.int16, np.float32, np.float64]),
        st.tuples(st.integers(1, 16), st.integers(1, 16)),
        elements={"allow_nan": False, "allow_infinity": False, "allow_subnormal": False},
    ),
    ref=hnp.arrays(np.uint8, st.tuples(st.integers(1, 16), st.integers(1, 16))),
    strength=st.floats(0, 1),
)
def test_property_monotone_ties_shape_dtype(src, ref, strength):
    if src.dtype.kind == "f":
        src = np.clip(src, -1e6, 1e6)  # huge spans are fine, but keep arithmetic finite
    out = match_histograms(src, ref.astype(src.dtype), strength=strength)
    assert out.shape == src.shape and out.dtype == src.dtype
    order = np.argsort(src.ravel(), kind="stable")
    s, o = src.ravel()[order], out.ravel()[order].astype(np.float64)
    assert np.all(np.diff(o) >= -1e-9 * max(1.0, np.abs(o).max()))  # monotone
    same = np.diff(s) == 0
    assert np.all(np.diff(o)[same] == 0)  # ties stay tied


# --------------------------------------------------------------------------- masks


def test_mask_counts_only_masked_and_keeps_the_rest(astronaut, coffee):
    mask = np.zeros(astronaut.shape[:2], dtype=bool)
    mask[100:300, 150:400] = True
    out = match_histograms(astronaut, coffee, mask=mask)
    np.testing.assert_array_equal(out[~mask], astronaut[~mask])
    inside = match_histograms(np.ascontiguousarray(astronaut[100:300, 150:400]), coffee)
    np.testing.assert_array_equal(out[100:300, 150:400], inside)


def test_fit_mask_counts_only_masked_reference_pixels():
    ref = np.zeros((10, 10), dtype=np.uint8)
    ref[:, 5:] = 200
    mask = np.zeros((10, 10), dtype=bool)
    mask[:, 5:] = True
    m = HistogramMatcher().fit([ref], mask=[mask])
    assert m.n_pixels_seen_ == 50
    out = m.transform([np.arange(100, dtype=np.uint8).reshape(10, 10)])[0]
    assert np.all(out == 200)


def test_float_mask_with_outliers_outside_it():
    rng = np.random.default_rng(10)
    src = rng.random((32, 32)).astype(np.float32)
    src[0, 0], src[0, 1] = -50.0, 80.0
    mask = np.ones((32, 32), dtype=bool)
    mask[0, :2] = False
    out = match_histograms(src, rng.random((16, 16)).astype(np.float32) + 5, mask=mask)
    assert out[0, 0] == -50.0 and out[0, 1] == 80.0
    assert out[mask].min() >= 5


@pytest.mark.parametrize(
    ("mask", "exc", "msg"),
    [
        (np.ones((3, 3), dtype=bool), ValueError, "shape"),
        (np.zeros((8, 8), dtype=bool), ValueError, "no pixels"),
        (np.ones((8, 8), dtype=np.uint8), TypeError, "boolean"),
        ([np.ones((8, 8), bool)] * 2, ValueError, "one mask per image"),
    ],
)
def test_bad_masks_are_clear_errors(mask, exc, msg):
    img = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(exc, match=msg):
        HistogramMatcher().fit([img], mask=mask)


# ------------------------------------------------------------------------- strength


def test_strength_zero_is_identity_and_half_is_the_blend(astronaut, coffee):
    np.testing.assert_array_equal(match_histograms(astronaut, coffee, strength=0.0), astronaut)
    full = match_histograms(astronaut, coffee).astype(np.float64)
    half = match_histograms(astronaut, coffee, strength=0.5).astype(np.float64)
    expected = 0.5 * astronaut + 0.5 * full
    assert np.abs(half - expected).max() <= 0.5 + 1e-9
    f = astronaut.astype(np.float32) / 255
    ff = match_histograms(f, coffee.astype(np.float32) / 255)
    fh = match_histograms(f, coffee.astype(np.float32) / 255, strength=0.25)
    np.testing.assert_allclose(fh, 0.75 * f + 0.25 * ff, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_blend_is_the_blend_formula_to_the_bit(dtype):
    from histmatch_ml.methods._base import blend

    rng = np.random.default_rng(8)
    original = (rng.normal(size=(64, 48, 3)) * 100).astype(dtype)
    s = dtype(1) / 3
    for strength in (0.0, 0.1, 0.75, 1 / 3):
        matched = (rng.normal(size=original.shape) * 7).astype(dtype)
        expected = original + dtype(strength) * (matched - original)
        kept = original.copy()
        out = np.empty_like(original)
        assert blend(original, matched.copy(), strength, np.dtype(dtype), out=out) is out
        np.testing.assert_array_equal(out, expected)
        np.testing.assert_array_equal(original, kept)
    assert s > 0


def test_strength_blends_continuous_floats_without_full_size_temporaries(astronaut, coffee):
    import tracemalloc

    import cv2

    src = cv2.GaussianBlur(astronaut.astype(np.float32) / 255, (0, 0), 1.5)

    def peak_of(strength):
        m = HistogramMatcher(strength=strength).fit([coffee.astype(np.float32) / 255])
        tracemalloc.start()
        try:
            out = m.transform(src[None])
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    full, peak_full = peak_of(1.0)
    out, peak_blend = peak_of(0.6)
    # blending adds no image-sized temporary over the unblended transform
    assert peak_blend < peak_full + 0.25 * out.nbytes
    np.testing.assert_allclose(out, 0.4 * src[None] + 0.6 * full, atol=1e-6)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("params", "msg"),
    [
        ({"strength": 1.5}, "strength"),
        ({"strength": -0.1}, "strength"),
        ({"method": "nope"}, "method"),
        ({"n_quantiles": 1}, "n_quantiles"),
    ],
)
def test_bad_params_named_in_error(params, msg):
    with pytest.raises(ValueError, match=msg):
        HistogramMatcher(**params).fit(np.zeros((1, 4, 4), dtype=np.uint8))


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ({"strength": 1.5}, "strength"),
        ({"n_jobs": 2.0}, "n_jobs"),
        ({"n_jobs": -2}, "n_jobs"),
        ({"ordering": "nope"}, "ordering"),
        ({"n_quantiles": 2**40}, "n_quantiles"),
        ({"n_iter": 0}, "n_iter"),
        ({"method": "nope"}, "method"),
    ],
)
def test_parameters_are_validated_in_fit(astronaut, bad, msg):
    m = HistogramMatcher(**bad)
    with pytest.raises((ValueError, TypeError), match=msg):
        m.fit([astronaut])
    assert not hasattr(m, "reference_")
    # set after a fit, they are refused by the next fit and partial_fit of a new matcher
    fitted = HistogramMatcher().fit([astronaut]).set_params(**bad)
    with pytest.raises((ValueError, TypeError), match=msg):
        fitted.fit([astronaut])
    with pytest.raises((ValueError, TypeError), match=msg):
        HistogramMatcher(**bad).partial_fit([astronaut])


@pytest.mark.parametrize(
    ("X", "exc", "msg"),
    [
        ([], ValueError, "at least one image"),
        (np.zeros((0, 4, 4)), ValueError, "empty|0 sample"),
        ([np.zeros((0, 4))], ValueError, "empty"),
        (np.zeros((2, 2, 2, 2, 2)), ValueError, "shape"),
        (np.full((1, 4, 4), np.nan), ValueError, "NaN"),
        (np.full((1, 4, 4), np.inf, dtype=np.float32), ValueError, "infinity"),
        (np.zeros((1, 4, 4), dtype=complex), (TypeError, ValueError), "omplex"),
        (np.zeros((1, 4, 4), dtype=bool), TypeError, "dtype"),
        (np.array([[["a"]]], dtype=object), TypeError, "numbers"),
        ("not an image", ValueError, r"X\[0\]: cannot read 'not an image'"),  # a str: a path
        (3.5, TypeError, "numpy array"),
        ([np.zeros((4, 4, 3)), np.zeros((4, 4, 1))], ValueError, "channel count"),
        ([np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint16)], TypeError, "one dtype"),
    ],
)
def test_bad_input_is_a_clear_error(X, exc, msg):
    with pytest.raises(exc, match=msg):
        HistogramMatcher().fit(X)


def test_channel_count_must_match_fit(astronaut):
    m = HistogramMatcher().fit([astronaut])
    with pytest.raises(ValueError, match="3 channel"):
        m.transform([astronaut[:, :, :2]])


@pytest.mark.parametrize("name", GREY)
def test_grey_samples_match_their_reference_better_than_before(name, camera):
    src = load(name)
    out = match_histograms(src, camera)
    assert histogram_distance(out, camera)[0] < 0.2 * max(histogram_distance(src, camera)[0], 1)


@pytest.mark.parametrize("method", ["per_channel", "exact"])
def test_n_jobs_threads_give_identical_results(method, astronaut, coffee):
    batch = np.stack([astronaut, astronaut[::-1], astronaut[:, ::-1], astronaut // 2])
    m = HistogramMatcher(method, random_state=0).fit([coffee])
    serial = m.transform(batch)
    threaded = m.set_params(n_jobs=2).transform(batch)
    np.testing.assert_array_equal(serial, threaded)
    listed = m.transform([astronaut, coffee[:50, :70]])
    m.set_params(n_jobs=1)
    for a, b in zip(listed, m.transform([astronaut, coffee[:50, :70]])):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_mask_keeps_unmasked_pixels_for_16_bit_and_float(dtype, astronaut, coffee):
    src = (astronaut.astype(np.int32) * 100 - (12800 if dtype == np.int16 else 0)).astype(dtype)
    ref = (coffee.astype(np.int32) * 100 - (12800 if dtype == np.int16 else 0)).astype(dtype)
    mask = np.zeros(src.shape[:2], dtype=bool)
    mask[50:200, 60:300] = True
    out = match_histograms(src, ref, mask=mask)
    np.testing.assert_array_equal(out[~mask], src[~mask])
    inside = match_histograms(np.ascontiguousarray(src[50:200, 60:300]), ref)
    np.testing.assert_array_equal(out[50:200, 60:300], inside)


def test_results_do_not_depend_on_opencv_threads(astronaut, coffee):
    import cv2

    cases = [
        (astronaut.astype(np.float32) / 255, coffee.astype(np.float32) / 255),
        (astronaut.astype(np.uint16) * 257, coffee.astype(np.uint16) * 257),
        (astronaut, coffee),
    ]
    before = cv2.getNumThreads()
    try:
        for src, ref in cases:
            m = HistogramMatcher().fit([ref])
            cv2.setNumThreads(1)
            serial = m.transform([src])[0]
            cv2.setNumThreads(4)
            np.testing.assert_array_equal(m.transform([src])[0], serial)
    finally:
        cv2.setNumThreads(before)


def test_results_do_not_share_memory_with_each_other_or_work_buffers(astronaut, coffee):
    for src, ref in [
        (astronaut.astype(np.float32) / 255, coffee.astype(np.float32) / 255),
        (astronaut.astype(np.int16) * 100, coffee.astype(np.int16) * 100),
    ]:
        m = HistogramMatcher().fit([ref])
        first = m.transform(src[None])
        kept = first.copy()
        second = m.transform(src[None, ::-1])
        np.testing.assert_array_equal(first, kept)  # work buffers reused, results untouched
        assert not np.shares_memory(first, second)


def test_scale_mismatch_between_images_and_references_warns(astronaut, coffee):
    as_float = astronaut.astype(np.float32) / 255
    m = HistogramMatcher(scale="raw").fit([coffee])
    with pytest.warns(UserWarning, match=r"dtype float32 but the references were uint8"):
        out = m.transform([as_float])[0]
    assert out.max() > 1  # on the references' 0..255 scale, as the warning says
    m = HistogramMatcher(scale="raw").fit([coffee.astype(np.float32) / 255])
    with pytest.warns(UserWarning, match="rounded to uint8"):
        m.transform([astronaut])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.transform([astronaut.astype(np.float64) / 255])  # float32 vs float64: same scale
        HistogramMatcher("lab").fit([coffee]).transform([as_float])  # lab reads each scale


@pytest.mark.parametrize("method", ["per_channel", "exact", "lab"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("with_mask", [False, True])
def test_transform_refuses_nan_and_infinity_anywhere(method, bad, with_mask, astronaut, coffee):
    m = HistogramMatcher(method, random_state=0).fit([coffee.astype(np.float32) / 255])
    batch = np.stack([astronaut, astronaut[::-1]]).astype(np.float32) / 255
    batch[1, 200, 300, 2] = bad  # one value of one channel of the second image
    mask = None
    if with_mask:
        mask = np.zeros(batch.shape[:3], dtype=bool)
        mask[:, :100] = True  # the bad value lies outside the mask: still refused
    with pytest.raises(ValueError, match="X must not contain NaN or infinity"):
        m.transform(batch, mask=mask)
    with pytest.raises(ValueError, match="NaN or infinity"):
        m.transform(list(batch.astype(np.float64)), mask=None if mask is None else list(mask))


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a,
        lambda a: a.astype(np.uint16) * 257,
        lambda a: a.astype(np.float32) / 255,  # 8-bit levels
        lambda a: (a.astype(np.float32) + 0.5) / 256,  # continuous-ish: the grid
    ],
    ids=["uint8", "uint16", "float32 levels", "float32 grid"],
)
def test_read_only_images_and_references_are_accepted(convert, astronaut, coffee):
    src, ref = convert(astronaut), convert(coffee)
    src.flags.writeable = ref.flags.writeable = False  # e.g. np.frombuffer or a memory map
    m = HistogramMatcher().fit([ref])
    out = m.transform(src[None])
    assert out.dtype == src.dtype and out.flags.writeable
    np.testing.assert_array_equal(out, m.transform(src[None].copy()))


# ----------------------------------------------------------------------- numeric edges
@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
def test_64_bit_integers_within_2_53_are_exact_and_never_wrap(dtype, strength):
    lo = -(2**53) if dtype == np.int64 else 0
    x = np.array([[lo, 0], [2**53, 2**53 - 1]], dtype=dtype)[None]
    out = HistogramMatcher(strength=strength).fit(x).transform(x)
    assert out.dtype == dtype
    if strength == 0.0:
        np.testing.assert_array_equal(out, x)
    assert lo <= int(out.min()) and int(out.max()) <= 2**53
    # a float reference far beyond the dtype's range clips to its top, never wraps
    huge = HistogramMatcher().fit(np.array([[0.0, 1e30]])[None]).transform(x)
    assert int(huge.max()) > 2**62 and int(huge.min()) >= 0


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_64_bit_integers_beyond_2_53_are_refused(dtype):
    x = np.array([[2**60, 3]], dtype=dtype)[None]
    with pytest.raises(ValueError, match=r"X must hold .*2\*\*53"):
        HistogramMatcher().fit(x)
    m = HistogramMatcher().fit(np.array([[1, 3]], dtype=dtype)[None])
    with pytest.raises(ValueError, match=r"X must hold .*2\*\*53"):
        m.transform(x)


@pytest.mark.parametrize("method", ["per_channel", "exact"])
@pytest.mark.parametrize("strength", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("dtype", "big"), [(np.float64, 1.7e308), (np.float32, 3.3e38)])
def test_extreme_finite_floats_give_finite_monotone_outputs(method, strength, dtype, big):
    x = np.array([[-big, big], [0.0, 1.0]], dtype=dtype)[None]
    out = HistogramMatcher(method, strength=strength).fit(x).transform(x)
    assert out.dtype == dtype and np.isfinite(out).all()
    order = np.argsort(x, axis=None)
    assert (np.diff(out.ravel()[order].astype(np.float64)) >= 0).all()
    if strength == 0.0:
        np.testing.assert_array_equal(out, x)


def test_float16_keeps_its_dtype():
    x = (np.arange(64).reshape(1, 8, 8) / 64).astype(np.float16)
    m = HistogramMatcher().fit(x)
    out = m.transform(x)
    assert out.dtype == np.float16 and out.shape == x.shape
    np.testing.assert_allclose(out.astype(np.float64), x.astype(np.float64), atol=1e-3)
    listed = m.transform([x[0], x[0].astype(np.float32)])
    assert [im.dtype for im in listed] == [np.float16, np.float32]
    assert match_histograms(x[0], x[0]).dtype == np.float16


@pytest.mark.parametrize(
    ("call", "exc", "msg"),
    [
        (lambda: HistogramMatcher().fit([[1, 2, 3], [4, 5]]), ValueError, "X must hold feature"),
        (
            lambda: HistogramMatcher().fit([np.zeros((2, 2)), [[1, 2], [3]]]),
            ValueError,
            r"X\[1\] must be an image",
        ),
        (lambda: HistogramMatcher().fit(np.zeros((3, 0))), ValueError, "X must not be empty"),
        (lambda: HistogramMatcher().fit(np.zeros((0, 3))), ValueError, "X must not be empty"),
        (
            lambda: match_histograms([[1, 2], [3]], np.zeros((4, 4))),
            ValueError,
            "image must be an image",
        ),
        (
            lambda: match_histograms(np.zeros((4, 4)), np.zeros((4, 4), bool)),
            TypeError,
            "reference must have dtype",
        ),
        (
            lambda: match_histograms(np.zeros((4, 4), complex), np.zeros((4, 4))),
            TypeError,
            "image must have dtype",
        ),
    ],
)
def test_bad_inputs_are_refused_in_the_library_words(call, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        call()
    assert "setting an array element" not in str(info.value)


def test_uint16_with_many_channels_matches_each_channel_on_its_own():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65536, (1, 5, 4, 300), dtype=np.uint16)
    ref = rng.integers(0, 65536, (1, 5, 5, 300), dtype=np.uint16)
    out = HistogramMatcher().fit(ref).transform(x)
    for c in (0, 137, 299):
        alone = HistogramMatcher().fit(ref[..., c]).transform(x[..., c])
        np.testing.assert_array_equal(out[..., c], alone)


def test_n_iter_raised_beyond_its_bound_after_fit_is_refused_at_transform():
    x = np.random.default_rng(0).integers(0, 255, (1, 8, 8, 3), dtype=np.uint8)
    m = HistogramMatcher("lab", n_iter=2).fit(x)
    m.set_params(n_iter=10**9)
    with pytest.raises(ValueError, match="n_iter"):
        m.transform(x)
