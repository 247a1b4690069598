"""``scale``: images and references of different dtypes (HistogramMatcher, match_histograms,
RandomHistogramMatching, the command line)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from conftest import load
from histmatch_ml import HistogramMatcher, RandomHistogramMatching, match_histograms
from histmatch_ml.metrics import histogram_distance

SOURCE, REFERENCE = load("astronaut"), load("coffee")


@pytest.mark.parametrize(
    ("convert", "unit"),
    [
        (lambda a: a.astype(np.uint16) * 257, 257.0),  # 16-bit of the same picture
        (lambda a: a / 255.0, 1 / 255),  # img_as_float, ToTensor, ToFloat
        (lambda a: (a / 255.0).astype(np.float32), 1 / 255),
        (lambda a: a.astype(np.int16) * 128, 32767 / 255),  # signed, on [0, 1] of [-1, 1]
    ],
)
@pytest.mark.parametrize("method", ["per_channel", "exact"])
def test_an_8_bit_reference_gives_any_dtype_its_look(convert, unit, method):
    image = convert(SOURCE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scale warning under scale="dtype"
        out = match_histograms(image, REFERENCE, method=method)
    assert out.dtype == image.dtype and out.shape == image.shape
    expected = match_histograms(SOURCE, REFERENCE, method=method).astype(np.float64)
    # the same picture on the image's own scale: per_channel within the 8-bit output's
    # rounding (plus the image dtype's own); exact with the same distribution (floats take
    # the quantile function between levels, and ties may go to other pixels)
    got = out.astype(np.float64) / unit
    if method == "per_channel":
        assert np.abs(got - expected).max() <= 0.5 + 0.5 / unit * (out.dtype.kind in "iu") + 1e-4
    else:
        assert (histogram_distance(got, expected) < 0.5).all()


def test_an_image_of_the_references_dtype_is_the_same_under_both_scales():
    for dtype in (np.uint8, np.float32):
        image, ref = SOURCE.astype(dtype), REFERENCE.astype(dtype)
        np.testing.assert_array_equal(
            match_histograms(image, ref, scale="dtype"), match_histograms(image, ref, scale="raw")
        )


def test_raw_scale_keeps_raw_values_and_warns():
    image = SOURCE.astype(np.uint16) * 257
    with pytest.warns(UserWarning, match="scale='raw'"):
        out = match_histograms(image, REFERENCE, scale="raw")
    assert out.max() <= 255  # the references' raw values


def test_floats_far_outside_unit_range_against_integer_references_warn_naming_raw():
    with pytest.warns(UserWarning, match="scale='raw'"):
        out = match_histograms(SOURCE.astype(np.float32), REFERENCE)
    assert out.dtype == np.float32 and out.max() <= 1.0


def test_integer_image_against_float_references_is_read_on_the_unit_scale():
    out = match_histograms(SOURCE, REFERENCE / 255.0)
    expected = match_histograms(SOURCE, REFERENCE)
    assert out.dtype == np.uint8
    assert np.abs(out.astype(int) - expected.astype(int)).max() <= 1


def test_the_augmenter_follows_its_matchers_scale():
    refs = [REFERENCE, load("chelsea")]
    image = SOURCE.astype(np.uint16) * 257
    params = {"apply": True, "reference": 0, "strength": 1.0}
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    out = aug.apply(image, params)
    np.testing.assert_array_equal(out, match_histograms(image, REFERENCE))
    raw = RandomHistogramMatching(HistogramMatcher(scale="raw"), p=1.0).fit(refs)
    with pytest.warns(UserWarning, match="scale='raw'"):
        assert raw.apply(image, params).max() <= 255


def test_scale_is_validated_in_fit():
    with pytest.raises(ValueError, match="'scale' parameter"):
        HistogramMatcher(scale="unit").fit([REFERENCE])
