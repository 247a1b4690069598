"""The method interface and registry: adding a method is one module (``toy_method.py``)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from sklearn.base import clone

from conftest import load
from histmatch_ml import HistogramMatcher, RandomHistogramMatching
from histmatch_ml.cli import main
from histmatch_ml.io import load_model
from histmatch_ml.matcher import estimator_params
from histmatch_ml.methods import (
    N_QUANTILES,
    MatchingMethod,
    Param,
    available_methods,
    declared_names,
    declared_params,
    register,
    unregister,
)
from toy_method import ToyMedian

REFS = [load("coffee"), load("chelsea")]


@pytest.fixture(autouse=True)
def toy():
    """``method="toy_median"`` registered for the test, and removed after it."""
    register(ToyMedian)
    yield ToyMedian
    unregister(ToyMedian.name)
    assert "toy_offset" not in HistogramMatcher().get_params()


def _medians(images):
    pooled = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    return np.median(pooled, axis=0)


def test_toy_method_through_the_estimator():
    assert "toy_median" in available_methods()
    m = HistogramMatcher("toy_median", toy_offset=3.0)
    assert m.get_params()["toy_offset"] == 3.0
    assert clone(m).toy_offset == 3.0 and HistogramMatcher().toy_offset == 0.0
    assert "toy_offset" in inspect.signature(HistogramMatcher).parameters
    out = m.fit(REFS).transform([load("astronaut")])[0]
    expected = np.rint(np.clip(_medians(REFS) + 3.0, 0, 255)).astype(np.uint8)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, out.shape))
    half = m.set_params(strength=0.5).transform([load("astronaut")])[0]
    assert not np.array_equal(half, out)


def test_toy_method_parameter_is_declared_and_validated():
    constraints = HistogramMatcher._parameter_constraints
    assert "toy_offset" in constraints and "toy_median" in constraints["method"][0].options
    assert 'Used by method="toy_median"' in " ".join(HistogramMatcher.__doc__.split())
    assert estimator_params()["toy_offset"][1] == ["toy_median"]
    assert "toy_offset" in declared_names() and list(declared_names()) == list(declared_params())
    declared_params()["toy_offset"][1].append("not_a_method")  # (a copy: the index is kept)
    assert declared_params()["toy_offset"][1] == ["toy_median"]
    assert "toy_median" in estimator_params()["n_quantiles"][1]
    with pytest.raises(ValueError, match="toy_offset"):
        HistogramMatcher("toy_median", toy_offset=1e9).fit(REFS)
    with pytest.raises(TypeError, match="unexpected keyword"):
        HistogramMatcher(toy_ofset=1.0)


def test_toy_method_through_the_augmenter_and_model_files(tmp_path):
    aug = RandomHistogramMatching(
        HistogramMatcher("toy_median", toy_offset=1.0), strength=1.0, p=1.0, random_state=0
    ).fit(REFS)
    assert aug.get_params()["matcher__toy_offset"] == 1.0
    image = load("astronaut")
    for _ in range(3):
        params = aug.sample_params()
        out = aug.apply(image, params)
        expected = np.rint(_medians([REFS[params["reference"]]]) + 1.0).astype(np.uint8)
        np.testing.assert_array_equal(out[0, 0], expected)
    loaded_aug = RandomHistogramMatching.load(aug.save(tmp_path / "aug.npz"))
    np.testing.assert_array_equal(loaded_aug.apply(image, params), out)

    m = HistogramMatcher("toy_median", toy_offset=-2.5).fit(REFS)
    loaded = HistogramMatcher.load(m.save(tmp_path / "m.npz"))
    assert loaded.toy_offset == -2.5 and loaded.method_ == "toy_median"
    np.testing.assert_array_equal(loaded.transform([image]), m.transform([image]))


def test_toy_method_on_the_command_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--toy-offset" in help_text and "toy_median" in help_text
    from PIL import Image

    refs = tmp_path / "refs"
    refs.mkdir()
    for i, image in enumerate(REFS):
        Image.fromarray(image).save(refs / f"{i}.png")
    model = tmp_path / "m.npz"
    status = main(
        ["fit", str(refs), "-o", str(model), "--method", "toy_median", "--toy-offset", "4"]
    )
    assert status == 0
    loaded = load_model(model)
    assert loaded.method_ == "toy_median" and loaded.toy_offset == 4.0


def test_built_in_parameters_are_explicit_keywords(toy):
    from histmatch_ml.matcher import _explicit_params

    unregister(ToyMedian.name)
    try:
        assert set(_explicit_params()) == set(estimator_params())
        assert list(inspect.signature(HistogramMatcher).parameters) == list(estimator_params())
    finally:
        register(ToyMedian)


def test_a_parameter_means_one_thing(toy):
    other_n_quantiles = Param("n_quantiles", 7, [], "Something else.", "int")

    class Clash(MatchingMethod):
        name = "clash_for_test"
        params = (other_n_quantiles,)

        def apply(self, image, mask, state, tables, params, out):
            out[...] = image

    with pytest.raises(ValueError, match="n_quantiles"):
        register(Clash)
    assert "clash_for_test" not in available_methods()
    assert N_QUANTILES.default == 1024


@pytest.mark.parametrize(
    ("index_dtype", "n"),
    [(np.uint8, 256), (np.uint8, 7), (np.uint16, 65536), (np.uint16, 5000), (np.uint32, 70000)],
)
@pytest.mark.parametrize("table_dtype", [np.float32, np.float64, np.uint16, np.int16, np.int64])
def test_gather_is_numpy_take(index_dtype, n, table_dtype):
    from histmatch_ml.methods._base import gather

    rng = np.random.default_rng(n)
    table = (rng.random(n) * 30000).astype(table_dtype)
    index = rng.integers(0, n, (37, 90)).astype(index_dtype)
    expected = np.take(table, index)
    out = np.empty(index.shape, dtype=table_dtype)
    assert gather(table, index, out) is out
    np.testing.assert_array_equal(out, expected)
    # a band of rows of a wider array (row strides), and element-strided planes
    wide = np.zeros((37, 200), dtype=table_dtype)
    gather(table, index, wide[:, 5:95])
    np.testing.assert_array_equal(wide[:, 5:95], expected)
    assert not wide[:, :5].any() and not wide[:, 95:].any()
    strided = np.zeros((37, 180), dtype=table_dtype)[:, ::2]
    gather(table, np.repeat(index, 2, axis=1)[:, ::2], strided)
    np.testing.assert_array_equal(strided, expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape", [(31, 47, 3), (31, 47, 1), (5, 9, 11, 2), (8, 6, 7)])
def test_keep_unmasked_restores_exactly_the_pixels_outside_the_mask(dtype, shape):
    from histmatch_ml.methods._base import keep_unmasked

    rng = np.random.default_rng(len(shape))
    image = (rng.random(shape) * 100).astype(dtype)
    matched = (rng.random(shape) * 100 + 200).astype(dtype)
    for mask in (rng.random(shape[:-1]) < 0.6, np.zeros(shape[:-1], bool), None):
        out = matched.copy()
        assert keep_unmasked(out, image, mask) is out
        expected = matched if mask is None else np.where(mask[..., None], matched, image)
        np.testing.assert_array_equal(out, expected)
    # a strided output and a non-contiguous mask take numpy's copy, with the same result
    mask = (rng.random(shape[:-1][::-1]) < 0.5).T
    out = np.repeat(matched, 2, axis=-1)[..., ::2]
    keep_unmasked(out, image, mask)
    np.testing.assert_array_equal(out, np.where(mask[..., None], matched, image))
