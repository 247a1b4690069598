"""reference="barycenter": the average of the references' quantile functions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from histmatch_ml import HistogramMatcher, _reference
from histmatch_ml._images import to_batch
from histmatch_ml.methods import get_method

METHODS = ["per_channel", "exact", "lab", "landmarks"]


def _quantile_function(matcher, grid):
    """Each channel's reference quantile function of a matcher fitted on one image."""
    knots = matcher.tables_
    return np.stack(
        [_reference.quantile_values(knots, c, grid) for c in range(matcher.n_channels_)]
    )


def test_every_reference_weighs_the_same_whatever_its_size():
    rng = np.random.default_rng(0)
    large = rng.normal(0.0, 1.0, (1, 128, 128))
    small = rng.normal(10.0, 1.0, (1, 8, 8))
    refs = [large[0], small[0]]
    pooled = HistogramMatcher(n_quantiles=101).fit(refs)
    bary = HistogramMatcher(reference="barycenter", n_quantiles=101).fit(refs)
    image = rng.normal(0.0, 1.0, (1, 32, 32))
    assert abs(np.median(pooled.transform(image))) < 0.5  # the large image dominates
    assert abs(np.median(bary.transform(image)) - 5.0) < 0.5  # halfway: one image each
    # the state is the average of the references' own quantile functions
    grid = _reference.probability_grid(101)
    alone = [_quantile_function(HistogramMatcher(n_quantiles=101).fit([r]), grid) for r in refs]
    np.testing.assert_allclose(bary.reference_["barycenter"], np.mean(alone, axis=0))
    assert bary.reference_mode_ == "barycenter" and bary.n_images_seen_ == 2


def test_an_image_and_its_enlargement_make_the_image_itself():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    enlarged = np.repeat(np.repeat(image, 3, axis=0), 3, axis=1)  # the same histogram
    one = HistogramMatcher(reference="barycenter").fit([image])
    both = HistogramMatcher(reference="barycenter").fit([image, enlarged])
    np.testing.assert_array_equal(both.reference_["barycenter"], one.reference_["barycenter"])


@pytest.mark.parametrize("method", METHODS)
def test_partial_fit_equals_fit_and_merges_by_images(method):
    rng = np.random.default_rng(2)
    refs = [rng.integers(0, 256, (8 + 4 * i, 10, 3), dtype=np.uint8) for i in range(5)]
    images = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    kw = {"reference": "barycenter", "n_iter": 3, "random_state": 0, "strength": 1.0}
    whole = HistogramMatcher(method, **kw).fit(refs)
    parts = HistogramMatcher(method, **kw).partial_fit(refs[:2]).partial_fit(refs[2:])
    for key in whole.reference_:
        if whole.reference_[key].dtype.kind == "f":
            np.testing.assert_allclose(parts.reference_[key], whole.reference_[key], atol=1e-9)
        else:
            np.testing.assert_array_equal(parts.reference_[key], whole.reference_[key])
    a, b = parts.transform(images).astype(int), whole.transform(images).astype(int)
    assert np.abs(a - b).max() <= 1  # (float rounding of the averages, then to uint8)


@pytest.mark.parametrize("method", METHODS)
def test_n_jobs_does_not_change_the_barycentre(method):
    """References summarised in threads give the state of one thread, bit for bit."""
    rng = np.random.default_rng(5)
    refs = [rng.integers(0, 256, (6 + 3 * i, 9, 3), dtype=np.uint8) for i in range(6)]
    kw = {"reference": "barycenter", "n_iter": 3, "random_state": 0}
    one = HistogramMatcher(method, **kw).fit(refs)
    threads = HistogramMatcher(method, n_jobs=3, **kw).fit(refs)
    more = HistogramMatcher(method, n_jobs=3, **kw).fit(refs[:1]).partial_fit(refs[1:])
    for key, value in one.reference_.items():
        np.testing.assert_array_equal(threads.reference_[key], value)
        if value.dtype.kind == "f":
            np.testing.assert_allclose(more.reference_[key], value, atol=1e-9)
        else:
            np.testing.assert_array_equal(more.reference_[key], value)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), split=st.integers(1, 3))
def test_merge_order_does_not_matter(seed, split):
    rng = np.random.default_rng(seed)
    refs = [rng.random((4 + i, 5)) for i in range(4)]
    a = HistogramMatcher(reference="barycenter", n_quantiles=16)
    a.partial_fit(refs[:split]).partial_fit(refs[split:])
    b = HistogramMatcher(reference="barycenter", n_quantiles=16)
    b.partial_fit(refs[split:]).partial_fit(refs[:split])
    np.testing.assert_allclose(a.reference_["barycenter"], b.reference_["barycenter"])


def test_lab_barycenter_averages_projections_on_shared_axes():
    rng = np.random.default_rng(3)
    refs = [rng.random((6 + 2 * i, 6, 3)).astype(np.float32) for i in range(3)]
    bary = HistogramMatcher("lab", reference="barycenter", n_iter=4, random_state=0).fit(refs)
    first = HistogramMatcher("lab", n_iter=4, random_state=0).fit(refs[:1])
    np.testing.assert_array_equal(bary.reference_["rotations"], first.reference_["rotations"])
    lab = get_method("lab")
    params = first._params()
    alone = [
        lab.learn(to_batch([r]), params, None, like=first.reference_)["projected_quantiles"]
        for r in refs
    ]
    np.testing.assert_allclose(bary.reference_["projected_quantiles"], np.mean(alone, axis=0))
    out = bary.transform(np.stack([refs[0][:6]] * 2))
    assert out.shape == (2, 6, 6, 3) and out.dtype == np.float32


def test_exact_reads_a_per_channel_barycentre():
    rng = np.random.default_rng(4)
    refs = [rng.normal(50 * (i + 1), 5, (8, 8)) for i in range(3)]
    bary = HistogramMatcher(reference="barycenter", n_quantiles=64).fit(refs)
    image = rng.normal(0, 1, (1, 8, 8))
    out = bary.set_params(method="exact").transform(image)
    assert abs(np.median(out) - 100) < 5


@pytest.mark.parametrize("method", METHODS)
def test_barycentres_are_saved_and_loaded(method, tmp_path):
    rng = np.random.default_rng(5)
    refs = [rng.random((6 + i, 7, 3)) for i in range(3)]
    matcher = HistogramMatcher(method, reference="barycenter", n_iter=3, random_state=0)
    matcher.fit(refs)
    loaded = HistogramMatcher.load(matcher.save(tmp_path / "m.npz"))
    assert loaded.reference_mode_ == "barycenter"
    image = rng.random((1, 5, 5, 3))
    np.testing.assert_array_equal(loaded.transform(image), matcher.transform(image))
    # and merge on: a loaded barycentre is mergeable like the fitted one
    more = rng.random((4, 4, 3))
    np.testing.assert_allclose(
        loaded.partial_fit([more]).transform(image),
        matcher.partial_fit([more]).transform(image),
    )


def test_switching_reference_between_partial_fits_is_refused():
    refs = np.random.default_rng(6).random((2, 4, 4))
    matcher = HistogramMatcher(reference="barycenter").fit(refs)
    with pytest.raises(ValueError, match="reference is 'pooled'"):
        matcher.set_params(reference="pooled").partial_fit(refs)


def test_a_tampered_barycentre_is_refused_on_load(tmp_path):
    refs = np.random.default_rng(7).random((2, 4, 4))
    matcher = HistogramMatcher(reference="barycenter", n_quantiles=8).fit(refs)
    matcher.reference_["barycenter"] = matcher.reference_["barycenter"][:, ::-1].copy()
    path = matcher.save(tmp_path / "bad.npz")
    with pytest.raises(ValueError, match="non-decreasing"):
        HistogramMatcher.load(path)
