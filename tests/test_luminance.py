"""``method="luminance"``: CIELAB lightness matched, chroma and hue kept."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage import color

from conftest import RGB_PAIRS, load
from histmatch_ml import HistogramMatcher, _color, match_histograms
from histmatch_ml.metrics import wasserstein_1d


def half(name: str) -> np.ndarray:
    return np.ascontiguousarray(load(name)[::2, ::2])


def _lab(image: np.ndarray) -> np.ndarray:
    """CIELAB by scikit-image (an independent implementation)."""
    unit = image / _color.full_scale(image.dtype) if image.dtype.kind == "u" else image
    return color.rgb2lab(unit.astype(np.float64))


def _light(image: np.ndarray) -> np.ndarray:
    return _color.lightness(image if image.ndim == 3 else image[..., None]).ravel()


@pytest.mark.parametrize(("source", "reference"), RGB_PAIRS)
def test_lightness_follows_the_reference_and_colours_stay(source, reference):
    s, r = half(source), half(reference)
    out = match_histograms(s, r, method="luminance")
    assert out.dtype == np.uint8 and out.shape == s.shape
    before = wasserstein_1d(_light(s), _light(r))
    assert wasserstein_1d(_light(out), _light(r)) < 0.05 * before
    # a* and b* are kept within the rounding to 8 bits where the new colour is inside
    # the gamut (a colour brought back into it sits on its surface: a code 0 or 255)
    inside = ((out >= 2) & (out <= 253)).all(axis=-1)
    assert inside.mean() > 0.5
    lab_in, lab_out = _lab(s)[inside], _lab(out)[inside]
    shift = np.abs(lab_out[:, 1:] - lab_in[:, 1:]).max(axis=-1)
    assert np.median(shift) < 0.5
    assert np.mean(shift < 2) > 0.99


def test_chroma_kept_exactly_in_gamut_for_floats():
    s, r = half("coffee") / 255.0, half("astronaut")
    out = match_histograms(s, r, method="luminance")
    assert out.dtype == np.float64
    inside = ((out > 1e-3) & (out < 1 - 1e-3)).all(axis=-1)  # not at the gamut's surface
    assert inside.mean() > 0.5
    lab_in, lab_out = _lab(s), _lab(out)
    np.testing.assert_allclose(lab_out[inside][:, 1:], lab_in[inside][:, 1:], atol=5e-3)
    # and L* takes the reference's distribution
    assert wasserstein_1d(_light(out), _light(r)) < 0.3


def test_out_of_gamut_colours_keep_their_hue_and_new_lightness():
    # saturated colours, matched to a very light reference: most leave the gamut
    rng = np.random.default_rng(0)
    hues = rng.uniform(0, 2 * np.pi, 400)
    lab = np.stack([np.full(400, 50.0), 60 * np.cos(hues), 60 * np.sin(hues)], axis=1)
    src = np.clip(color.lab2rgb(lab.reshape(20, 20, 3)), 0, 1)
    ref = np.clip(rng.normal(0.93, 0.02, (30, 30)), 0, 1)  # grey, L* near 97
    out = match_histograms(src, ref, method="luminance")
    lab_in, lab_out = _lab(src).reshape(-1, 3), _lab(out).reshape(-1, 3)
    # the lightness is the one matched, as it is for grey values of that reference
    assert wasserstein_1d(lab_out[:, 0], _light(ref)) < 0.5
    chroma_in, chroma_out = np.hypot(*lab_in[:, 1:].T), np.hypot(*lab_out[:, 1:].T)
    assert np.all(chroma_out <= chroma_in + 0.01) and np.mean(chroma_out < 0.9 * chroma_in) > 0.5
    coloured = chroma_out > 2
    hue_in = np.arctan2(lab_in[coloured, 2], lab_in[coloured, 1])
    hue_out = np.arctan2(lab_out[coloured, 2], lab_out[coloured, 1])
    assert np.abs(np.angle(np.exp(1j * (hue_out - hue_in)))).max() < 0.02  # radians


def test_grey_images_against_colour_references_take_their_lightness():
    grey, r = half("camera"), half("coffee")
    fitted = HistogramMatcher("luminance").fit(r[None])
    out = fitted.transform(grey[None])[0]
    assert out.shape == grey.shape and out.dtype == np.uint8
    before = wasserstein_1d(_light(grey), _light(r))
    assert wasserstein_1d(_light(out), _light(r)) < 0.1 * before  # (256 grey levels only)
    # and the same as against grey references of that lightness
    grey_ref = _color.with_lightness(
        np.zeros((*r.shape[:2], 1), np.uint8), _light(r).reshape(r.shape[:2])
    )
    from_grey = match_histograms(
        grey, np.rint(grey_ref[..., 0] * 255).astype(np.uint8), method="luminance"
    )
    assert np.abs(from_grey.astype(int) - out).mean() < 0.5


def test_colour_images_against_grey_references():
    s, grey = half("astronaut"), half("camera")
    fitted = HistogramMatcher("luminance").fit(grey[None])
    out = fitted.transform(s[None])[0]
    assert out.shape == s.shape
    assert wasserstein_1d(_light(out), _light(grey)) < 0.1 * wasserstein_1d(
        _light(s), _light(grey)
    )
    # grey pixels stay grey
    greys = np.repeat(np.arange(0, 256, 5, dtype=np.uint8)[None, :, None], 3, axis=2)
    out_grey = fitted.transform(greys[None])[0]
    assert np.abs(np.diff(out_grey.astype(int), axis=-1)).max() <= 1


@settings(max_examples=20, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(2, 10), st.integers(2, 10), st.just(3)),
        elements=st.floats(0, 1),
    ),
    st.integers(0, 2**31 - 1),
)
def test_lightness_map_is_monotone_and_shape_kept(image, seed):
    ref = np.random.default_rng(seed).random((8, 8, 3))
    out = match_histograms(image, ref, method="luminance")
    assert out.shape == image.shape and out.dtype == image.dtype
    assert out.min() >= 0 and out.max() <= 1
    light_in, light_out = _light(image), _light(out)
    order = np.argsort(light_in, kind="stable")
    assert np.all(np.diff(light_out[order]) >= -1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_dtypes_masks_and_strength(dtype):
    s, r = half("astronaut"), half("coffee")
    x = (
        s
        if dtype == np.uint8
        else (s.astype(np.uint16) * 257 if dtype == np.uint16 else (s / 255).astype(dtype))
    )
    fitted = HistogramMatcher("luminance").fit(r[None])
    out = fitted.transform(x[None])[0]
    assert out.dtype == x.dtype and out.shape == x.shape
    as8 = out / _color.full_scale(dtype) * 255
    assert np.abs(as8 - fitted.transform(s[None])[0]).mean() < 1.0
    mask = np.zeros(x.shape[:2], bool)
    mask[20:80, 30:100] = True
    masked = fitted.transform(x[None], mask=mask[None])[0]
    np.testing.assert_array_equal(masked[~mask], x[~mask])
    np.testing.assert_array_equal(fitted.set_params(strength=0.0).transform(x[None])[0], x)


def test_bands_of_rows_give_the_whole_image_result(monkeypatch):
    from histmatch_ml.methods import luminance

    s, r = half("astronaut"), half("coffee")
    mask = np.zeros(s.shape[:2], bool)
    mask[30:200, 10:150] = True
    for x in (s, (s / 255).astype(np.float32), s[..., :1]):
        fitted = HistogramMatcher("luminance", strength=0.7).fit(r[None])
        assert len(luminance.row_bands(x.shape, *luminance._BAND_PIXELS)) > 1
        banded = fitted.transform(x[None], mask=mask[None])
        fitted_again = HistogramMatcher("luminance", strength=0.7).fit(r[None])
        with monkeypatch.context() as m:
            m.setattr(luminance, "_BAND_PIXELS", (2**40, 2**40, 1))  # one band
            whole = fitted_again.transform(x[None], mask=mask[None])
        np.testing.assert_array_equal(banded, whole)


def test_partial_fit_and_save_load(tmp_path):
    a, b, s = half("coffee"), half("chelsea"), half("astronaut")
    whole = HistogramMatcher("luminance").fit([a, b])
    parts = HistogramMatcher("luminance").partial_fit(a[None]).partial_fit(b[None])
    assert np.abs(whole.transform(s[None]).astype(int) - parts.transform(s[None])).mean() < 0.5
    loaded = HistogramMatcher.load(whole.save(tmp_path / "lum.npz"))
    np.testing.assert_array_equal(loaded.transform(s[None]), whole.transform(s[None]))
    assert loaded.reference_.keys() == whole.reference_.keys()


def test_errors():
    with pytest.raises(ValueError, match=r"grey .* or RGB"):
        HistogramMatcher("luminance").fit(np.zeros((1, 8, 8, 4), np.uint8))
    fitted = HistogramMatcher("luminance").fit(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"grey .* or RGB"):
        fitted.transform(np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(TypeError, match="uint8, uint16, float32 or float64"):
        HistogramMatcher("luminance").fit(np.zeros((1, 8, 8, 3), np.int16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fitted.transform(np.full((1, 4, 4, 3), 3.0))
    # a lab state is not a luminance state
    lab = HistogramMatcher("lab", n_iter=2).fit(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="cannot use"):
        lab.set_params(method="luminance").transform(np.zeros((1, 8, 8, 3), np.uint8))
