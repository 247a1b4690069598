"""BiasFieldCorrector and estimate_bias_field: smooth multiplicative fields divided out."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from histmatch_ml import BiasFieldCorrector, HistogramMatcher, estimate_bias_field
from histmatch_ml.bias import _monomials


def _phantom(rng, shape=(20, 28, 24), levels=(60.0, 100.0, 150.0), noise=2.0):
    """Blocky three-tissue anatomy (labels) and its noisy intensities."""
    coarse = rng.integers(0, len(levels), tuple(-(-n // 4) for n in shape))
    labels = coarse.repeat(4, 0).repeat(4, 1).repeat(4, 2)[tuple(slice(n) for n in shape)]
    values = np.asarray(levels)[labels] + rng.normal(0, noise, shape)
    return labels, values


def _field(shape, coeffs):
    """exp of a quadratic in coordinates scaled to [-1, 1]: ``coeffs`` for z, y, x, z*x, y**2."""
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    cz, cy, cx, czx, cyy = coeffs
    return np.exp(cz * z + cy * y + cx * x + czx * z * x + cyy * y * y)


def _tissue_cv(values, labels):
    """Mean over tissues of the coefficient of variation of their values."""
    cvs = [values[labels == k].std() / values[labels == k].mean() for k in range(3)]
    return float(np.mean(cvs))


def test_a_quadratic_field_is_recovered_up_to_a_constant_and_the_tissues_sharpen():
    rng = np.random.default_rng(0)
    labels, values = _phantom(rng)
    truth = _field(values.shape, (0.15, -0.1, 0.2, 0.1, -0.15))
    biased = (values * truth).astype(np.float32)
    field = estimate_bias_field(biased)
    assert field.shape == biased.shape and field.dtype == np.float32
    ratio = field / truth  # the truth times a constant
    assert ratio.max() / ratio.min() < 1.04
    corrected = BiasFieldCorrector().fit_transform(biased[None])[0]
    np.testing.assert_allclose(corrected, biased / field, rtol=1e-5)
    assert _tissue_cv(corrected, labels) < 0.35 * _tissue_cv(biased, labels)
    # the overall level is kept: geometric mean of the field 1 over the voxels used
    assert abs(np.log(field).mean()) < 0.01


def test_no_bias_gives_a_flat_field():
    _, values = _phantom(np.random.default_rng(1))
    field = estimate_bias_field(values.astype(np.float32))
    assert np.abs(np.log(field)).max() < 0.02


def test_the_mask_sets_the_voxels_the_field_is_estimated_from():
    rng = np.random.default_rng(2)
    _, values = _phantom(rng)
    truth = _field(values.shape, (0.2, 0.0, -0.1, 0.0, 0.1))
    biased = values * truth
    mask = np.zeros(values.shape, dtype=bool)
    mask[2:-2, 3:-3, 2:-2] = True
    spoiled = biased.copy()
    spoiled[~mask] = rng.uniform(1, 1000, int((~mask).sum()))  # never read
    a = estimate_bias_field(biased, mask)
    b = estimate_bias_field(spoiled, mask)
    np.testing.assert_array_equal(a, b)
    # every voxel is corrected, masked or not
    out = BiasFieldCorrector().transform([spoiled], mask=[mask])[0]
    np.testing.assert_allclose(out, spoiled / b, rtol=1e-6)


def test_dtypes_containers_and_2d_images():
    rng = np.random.default_rng(3)
    labels, values = _phantom(rng)
    biased = values * _field(values.shape, (0.2, 0.1, 0.0, 0.0, 0.0))
    for dtype in (np.uint16, np.int16, np.float32, np.float64):
        vol = np.clip(np.rint(biased), 0, 30000).astype(dtype) if dtype != np.float32 else biased
        vol = vol.astype(dtype)
        out = BiasFieldCorrector().transform(vol[None])
        assert out.shape == (1, *vol.shape) and out.dtype == dtype
        assert _tissue_cv(out[0].astype(float), labels) < 0.5 * _tissue_cv(biased, labels)
    # a list of volumes of different sizes comes back as a list; the volumes' channels
    two = [biased.astype(np.float32), biased[:, :20].astype(np.float32)]
    out = BiasFieldCorrector().transform(two)
    assert isinstance(out, list) and [o.shape for o in out] == [v.shape for v in two]
    rgb = np.stack([biased, 0.5 * biased, biased], axis=-1).astype(np.float32)
    out = BiasFieldCorrector().transform(rgb[None])[0]
    assert out.shape == rgb.shape
    np.testing.assert_allclose(out[..., 0], out[..., 2])
    # images (spatial_dims=2): vignetting across the columns
    image = values[0] * np.exp(0.3 * np.linspace(-1, 1, values.shape[2]))[None, :]
    out = BiasFieldCorrector(spatial_dims=2).transform(image[None])[0]
    before, after = image[labels[0] == 1], out[labels[0] == 1]
    assert after.std() / after.mean() < 0.3 * before.std() / before.mean()


def test_a_field_does_not_depend_on_the_rest_of_the_batch_and_repeats():
    rng = np.random.default_rng(4)
    vols = [(_phantom(rng)[1] * _field((20, 28, 24), (0.1 * k, 0, 0, 0, 0))) for k in range(3)]
    vols = [v.astype(np.float32) for v in vols]
    batch = BiasFieldCorrector(random_state=5).transform(vols)
    alone = BiasFieldCorrector(random_state=5).transform(vols[2:])
    np.testing.assert_array_equal(batch[2], alone[0])
    np.testing.assert_array_equal(batch[1], BiasFieldCorrector(random_state=5).transform(vols)[1])


def test_it_is_a_scikit_learn_estimator_that_learns_nothing():
    corrector = BiasFieldCorrector(degree=3, n_samples=5000)
    assert clone(corrector).get_params() == corrector.get_params()
    assert corrector.__sklearn_tags__().requires_fit is False
    assert corrector.fit(None) is corrector
    assert not [k for k in vars(corrector) if k.endswith("_")]


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"degree": 0}, "degree"),
        ({"n_samples": 10}, "n_samples"),
        ({"spatial_dims": 4}, "spatial_dims"),
    ],
)
def test_bad_parameters_are_refused_naming_them(params, word):
    vol = np.ones((1, 8, 8, 8), np.float32)
    with pytest.raises(ValueError, match=word):
        BiasFieldCorrector(**params).transform(vol)


def test_bad_inputs_are_refused_clearly():
    with pytest.raises(ValueError, match="positive values"):
        estimate_bias_field(np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="inside its mask"):
        estimate_bias_field(np.ones((8, 8, 8)), np.zeros((8, 8, 8), bool))
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        estimate_bias_field(np.ones((8, 8, 8)), np.ones((8, 8), bool))
    with pytest.raises(ValueError, match="2-D image or a 3-D volume"):
        estimate_bias_field(np.ones(8))
    with pytest.raises(ValueError, match="NaN"):
        estimate_bias_field(np.full((8, 8, 8), np.nan))


def test_the_monomials_are_every_exponent_of_total_degree_one_to_degree():
    assert len(_monomials(2, 3)) == 9 and len(_monomials(3, 3)) == 19
    assert len(_monomials(2, 2)) == 5 and _monomials(1, 2) == [(0, 1), (1, 0)]


def test_correcting_before_matching_aligns_the_tissues_of_biased_volumes():
    # two "sites": other anatomies, opposite bias fields, another scale; matched to the
    # first, the second's tissues spread far less once both are corrected
    rng = np.random.default_rng(6)
    (_, a), (labels_b, b) = _phantom(rng), _phantom(rng)
    vols = [
        (a * _field(a.shape, (0.25, 0, 0, 0, 0))).astype(np.float32),
        (b * _field(b.shape, (-0.25, 0, 0, 0, 0)) * 3.0).astype(np.float32),
    ]
    spreads = []
    for inputs in (vols, BiasFieldCorrector().transform(vols)):
        matched = HistogramMatcher("exact", spatial_dims=3).fit(inputs[:1]).transform(inputs)
        spreads.append(_tissue_cv(matched[1].astype(float), labels_b))
    assert spreads[1] < 0.5 * spreads[0]


def test_channels_first_tensors_come_back_as_tensors():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    vols = np.stack([_phantom(rng)[1] * _field((20, 28, 24), (0.2, 0, 0, 0, 0))] * 2)
    vols = vols.astype(np.float32)
    out = BiasFieldCorrector().transform(torch.from_numpy(vols[:, None]))  # (N, C, D, H, W)
    assert isinstance(out, torch.Tensor) and out.shape == (2, 1, 20, 28, 24)
    assert out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy()[:, 0], BiasFieldCorrector().transform(vols))
