"""Tests of the matplotlib helpers in :mod:`histmatch_ml.plotting`."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image
from sklearn.exceptions import NotFittedError

pytest.importorskip("matplotlib")

import matplotlib.pyplot as plt

from histmatch_ml import HistogramMatcher, match_histograms
from histmatch_ml.methods import _base
from histmatch_ml.plotting import plot_matching, plot_reference_quantiles


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _curve(ax, label):
    (line,) = [line for line in ax.get_lines() if line.get_label() == label]
    return np.asarray(line.get_xdata()), np.asarray(line.get_ydata())


# ------------------------------------------------------------------ plot_matching
def test_plot_matching_rgb_shows_images_and_cdfs(astronaut, coffee):
    src, ref = astronaut[::4, ::4], coffee[::4, ::4]
    src_copy = src.copy()
    matched = match_histograms(src, ref)
    fig = plot_matching(src, matched, ref, title="astronaut to coffee")
    assert len(fig.axes) == 6
    assert fig._suptitle.get_text() == "astronaut to coffee"
    shown = [ax.get_images()[0].get_array() for ax in fig.axes[:3]]
    assert [a.shape for a in shown] == [src.shape, matched.shape, ref.shape]
    # one CDF per channel, the matched panel also carries the dashed reference
    assert [len(ax.get_lines()) for ax in fig.axes[3:]] == [3, 6, 3]
    for ax in fig.axes[3:]:
        for line in ax.get_lines():
            p = np.asarray(line.get_ydata())
            assert p[0] > 0.0 and p[-1] < 1.0
            assert np.all(np.diff(p) > 0)
            assert np.all(np.diff(line.get_xdata()) >= 0)
    np.testing.assert_array_equal(src, src_copy)


def test_plot_matching_cdf_x_range_is_the_image_range(camera):
    src = camera[::2, ::2]
    ref = np.clip(camera[::3, ::3].astype(np.int16) + 60, 0, 255).astype(np.uint8)
    fig = plot_matching(src, match_histograms(src, ref), ref)
    x, _ = fig.axes[3].get_lines()[0].get_data()
    assert x.min() == src.min()
    assert x.max() >= np.sort(src.ravel())[-(src.size // 2000 + 1)]
    assert fig.axes[3].get_lines()[0].get_color() == "black"


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_plot_matching_other_dtypes_and_pil(dtype):
    rng = np.random.default_rng(1)
    if dtype == np.uint16:
        src = rng.integers(0, 4000, (20, 30), dtype=np.uint16)
        ref = rng.integers(1000, 60000, (25, 25), dtype=np.uint16)
    else:
        src = rng.random((20, 30, 3), dtype=np.float32) * 0.5
        ref = rng.random((25, 25, 3), dtype=np.float32)
    matched = match_histograms(src, ref)
    fig = plot_matching(src, matched, ref)
    assert len(fig.axes) == 6
    image = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    assert len(plot_matching(image, image, image).axes) == 6


def test_plot_matching_rejects_bad_image():
    good = np.zeros((8, 8), dtype=np.uint8)
    with pytest.raises(TypeError, match="matched"):
        plot_matching(good, np.zeros((8, 8), dtype=np.complex64), good)


# ------------------------------------------------------- plot_reference_quantiles
def test_reference_quantiles_uint8_follow_the_pooled_histogram(astronaut, coffee):
    refs = [astronaut[::2, ::2], coffee[::2, ::2]]
    matcher = HistogramMatcher().fit(refs)
    fig = plot_reference_quantiles(matcher)
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["R", "G", "B"]
    for c, label in enumerate("RGB"):
        p, v = _curve(ax, label)
        pooled = np.concatenate([r[:, :, c].ravel() for r in refs])
        # knots are the occupied levels, at their midpoint probabilities
        np.testing.assert_array_equal(v, np.unique(pooled))
        counts = np.bincount(pooled, minlength=256)[np.unique(pooled)]
        expected_p = (np.cumsum(counts) - counts / 2) / pooled.size
        np.testing.assert_allclose(p, expected_p)
    assert "per_channel" in ax.get_title() and "2 image(s)" in ax.get_title()
    assert ax.get_legend() is not None


def test_reference_quantiles_float_values_and_custom_axes():
    rng = np.random.default_rng(3)
    refs = rng.normal(0.5, 0.1, size=(4, 16, 16)).astype(np.float32)
    matcher = HistogramMatcher().fit(refs)
    fig, ax = plt.subplots()
    out = plot_reference_quantiles(matcher, ax=ax, title="grey values")
    assert out is fig and fig.axes == [ax]
    p, v = _curve(ax, "grey")
    # every distinct reference value, at its midpoint probability
    values, counts = np.unique(refs, return_counts=True)
    np.testing.assert_allclose(v, values)
    np.testing.assert_allclose(p, (np.cumsum(counts) - counts / 2) / refs.size)
    assert ax.get_title() == "grey values"
    assert ax.get_legend() is None


@settings(max_examples=15, deadline=None)
@given(
    hnp.arrays(
        np.uint16,
        st.tuples(st.integers(1, 3), st.integers(2, 12), st.integers(2, 12)),
        elements=st.integers(0, 65535),
    )
)
def test_reference_quantiles_are_monotone_and_span_the_data(refs):
    matcher = HistogramMatcher().fit(refs)
    fig = plot_reference_quantiles(matcher)
    p, v = _curve(fig.axes[0], "grey")
    assert np.all(np.diff(p) > 0) and p[0] > 0 and p[-1] < 1
    assert np.all(np.diff(v) > 0)
    assert v[0] == refs.min() and v[-1] == refs.max()
    plt.close(fig)


def test_reference_quantiles_needs_a_fitted_matcher():
    with pytest.raises(NotFittedError):
        plot_reference_quantiles(HistogramMatcher())


class _JointMethod(_base.MatchingMethod):
    name = "joint_for_test"
    state_kind = "joint"

    def apply(self, image, mask, state, tables, params, out):
        out[...] = image


def test_reference_quantiles_rejects_joint_state(monkeypatch):
    monkeypatch.setitem(_base._REGISTRY, _JointMethod.name, _JointMethod())
    matcher = HistogramMatcher().fit(np.zeros((1, 4, 4, 3), dtype=np.uint8))
    matcher.method_ = _JointMethod.name
    with pytest.raises(ValueError, match="joint_for_test"):
        plot_reference_quantiles(matcher)
