"""scikit-learn compatibility: common checks, clone, pickle, Pipeline, GridSearchCV."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from histmatch_ml import HistogramMatcher, ImageFlattener


@parametrize_with_checks([HistogramMatcher(), ImageFlattener()])
def test_sklearn_common_checks(estimator, check):
    check(estimator)


def test_clone_and_params_roundtrip():
    m = HistogramMatcher(strength=0.5, random_state=3)
    c = clone(m)
    assert c.get_params() == m.get_params()
    c.set_params(strength=0.25)
    assert c.strength == 0.25 and m.strength == 0.5


def test_not_fitted_error():
    with pytest.raises(NotFittedError):
        HistogramMatcher().transform(np.zeros((1, 4, 4), dtype=np.uint8))


def test_pickle_roundtrip_gives_same_output(astronaut, coffee):
    m = HistogramMatcher().fit([coffee])
    m2 = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(m.transform([astronaut])[0], m2.transform([astronaut])[0])


def _gamma_shift(images, gamma=3.0):
    """A domain shift a monotone remap can undo: darker mid-tones (digits span 0..16)."""
    return 16.0 * (images / 16.0) ** gamma


def _shifted_digits():
    digits = load_digits()
    X, y = digits.images.copy(), digits.target
    X[len(X) // 2 :] = _gamma_shift(X[len(X) // 2 :])
    return X, y


def test_pipeline_with_grid_search_over_strength():
    X, y = _shifted_digits()
    pipe = make_pipeline(HistogramMatcher(), ImageFlattener(), LogisticRegression(max_iter=300))
    search = GridSearchCV(pipe, {"histogrammatcher__strength": [0.0, 1.0]}, cv=3)
    search.fit(X[::2], y[::2])
    # matching removes the shift, so the search prefers it, by a margin
    assert search.best_params_["histogrammatcher__strength"] == 1.0
    scores = search.cv_results_["mean_test_score"]
    assert scores[1] > scores[0] + 0.01
    assert search.score(X[1::2], y[1::2]) > 0.85
    scores = search.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))


def test_matching_removes_a_domain_shift_for_a_classifier():
    """Train on clean digits, test on shifted ones: matching recovers accuracy."""
    digits = load_digits()
    X, y = digits.images, digits.target
    train, test = slice(0, 1000), slice(1000, None)
    shifted_test = _gamma_shift(X[test])
    plain = make_pipeline(ImageFlattener(), LogisticRegression(max_iter=500)).fit(
        X[train], y[train]
    )
    matched = make_pipeline(
        HistogramMatcher(), ImageFlattener(), LogisticRegression(max_iter=500)
    ).fit(X[train], y[train])
    acc_plain = plain.score(shifted_test, y[test])
    acc_matched = matched.score(shifted_test, y[test])
    assert acc_matched > acc_plain + 0.05
    assert acc_matched > 0.9


def test_outputs_are_images_whatever_the_set_output_config(astronaut, coffee):
    import sklearn

    m = HistogramMatcher().fit([coffee])
    expected = m.transform(astronaut[None])
    with sklearn.config_context(transform_output="pandas"):
        np.testing.assert_array_equal(m.transform(astronaut[None]), expected)
        assert type(clone(m).fit_transform(astronaut[None])) is np.ndarray
    # images have no feature names to put in a frame: set_output accepts and keeps arrays
    assert m.set_output(transform="pandas") is m
    np.testing.assert_array_equal(m.transform(astronaut[None]), expected)
