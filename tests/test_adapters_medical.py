"""The TorchIO and MONAI adapters, run for real in their own pipelines."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from histmatch_ml import HistogramMatcher

torch = pytest.importorskip("torch")


def _fitted(method="landmarks"):
    rng = np.random.default_rng(0)
    refs = [rng.normal(100 * s, 15 * s, (8, 9, 10)).astype(np.float32) for s in (1, 2)]
    return HistogramMatcher(method, spatial_dims=3, reference="barycenter").fit(refs)


def _volume(seed=1, shape=(1, 8, 9, 10)):
    return torch.from_numpy(np.random.default_rng(seed).gamma(3, 30, shape).astype(np.float32))


# ------------------------------------------------------------------------- TorchIO
def test_torchio_transform_matches_intensity_images_in_a_compose():
    tio = pytest.importorskip("torchio")
    matcher = _fitted()
    t1 = _volume()
    labels = torch.zeros(1, 8, 9, 10, dtype=torch.int64)
    labels[:, 2:6, 2:7, 3:8] = 1
    subject = tio.Subject(t1=tio.ScalarImage(tensor=t1), seg=tio.LabelMap(tensor=labels))
    out = tio.Compose([matcher.as_torchio()])(subject)
    np.testing.assert_array_equal(out["t1"].data.numpy(), matcher.transform(t1).numpy())
    assert out["t1"].data.dtype == t1.dtype
    np.testing.assert_array_equal(out["seg"].data.numpy(), labels.numpy())  # labels untouched
    assert subject["t1"].data is t1 or np.array_equal(subject["t1"].data.numpy(), t1.numpy())


def test_torchio_transform_respects_the_subject_mask():
    tio = pytest.importorskip("torchio")
    matcher = _fitted()
    t1 = _volume(2)
    brain = torch.zeros(1, 8, 9, 10, dtype=torch.int64)
    brain[:, 1:7, 2:8, 2:9] = 1
    subject = tio.Subject(t1=tio.ScalarImage(tensor=t1), brain=tio.LabelMap(tensor=brain))
    out = matcher.as_torchio(masking_method="brain")(subject)["t1"].data.numpy()
    inside = brain.numpy().astype(bool)
    expected = matcher.transform(t1, mask=[inside[0]]).numpy()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[~inside], t1.numpy()[~inside])


def test_torchio_transform_pickles():
    pytest.importorskip("torchio")
    transform = _fitted().as_torchio()
    again = pickle.loads(pickle.dumps(transform))
    assert type(again) is type(transform)


# --------------------------------------------------------------------------- MONAI
def test_monai_array_transform_keeps_type_dtype_and_metadata():
    monai = pytest.importorskip("monai")
    matcher = _fitted()
    img = _volume(3)
    t = matcher.as_monai()
    out = t(img)
    assert isinstance(out, torch.Tensor) and out.dtype == img.dtype and out.shape == img.shape
    np.testing.assert_array_equal(out.numpy(), matcher.transform(img).numpy())
    meta = monai.data.MetaTensor(img.clone(), affine=torch.diag(torch.tensor([2.0, 2, 2, 1])))
    out_meta = t(meta)
    assert isinstance(out_meta, monai.data.MetaTensor)
    np.testing.assert_array_equal(out_meta.affine.numpy(), meta.affine.numpy())
    np.testing.assert_array_equal(out_meta.as_tensor().numpy(), out.numpy())
    as_array = t(img.numpy())  # channel-first arrays too
    assert isinstance(as_array, np.ndarray)
    np.testing.assert_array_equal(as_array, out.numpy())


def test_monai_dictionary_transform_uses_the_mask_key_in_a_compose():
    monai = pytest.importorskip("monai")
    matcher = _fitted()
    img = _volume(4)
    seg = torch.zeros(1, 8, 9, 10)
    seg[:, 2:6, 1:8, 2:9] = 1
    pipeline = monai.transforms.Compose([matcher.as_monai(keys=["image"], mask_key="seg")])
    out = pipeline({"image": img, "seg": seg})
    inside = seg.numpy().astype(bool)
    expected = matcher.transform(img, mask=[inside[0]]).numpy()
    np.testing.assert_array_equal(np.asarray(out["image"]), expected)
    np.testing.assert_array_equal(np.asarray(out["seg"]), seg.numpy())


def test_monai_transform_matches_2d_channel_first_images():
    pytest.importorskip("monai")
    rng = np.random.default_rng(5)
    refs = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    matcher = HistogramMatcher().fit(refs)
    img = torch.from_numpy(rng.integers(0, 100, (3, 16, 16), dtype=np.uint8))
    out = matcher.as_monai()(img)
    np.testing.assert_array_equal(out.numpy(), matcher.transform(img).numpy())
    with pytest.raises(ValueError, match="channel-first"):
        matcher.as_monai()(img[0, 0])
