"""Tests of histmatch_ml.augment.RandomHistogramMatching and its adapters."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data
from sklearn.exceptions import NotFittedError

from histmatch_ml import HistogramMatcher, RandomHistogramMatching
from histmatch_ml.methods import available_methods
from histmatch_ml.metrics import wasserstein_1d

# --------------------------------------------------------------------- helpers


def load(name: str) -> np.ndarray:
    """A bundled scikit-image sample image."""
    return getattr(data, name)()


def _refs_rgb() -> list[np.ndarray]:
    """Three bundled photos of different sizes and colour distributions."""
    return [load("coffee")[::4, ::4], load("chelsea")[::4, ::4], load("rocket")[::4, ::4]]


def _levels(values, shape=(6, 6, 3), dtype=np.uint8) -> list[np.ndarray]:
    """Constant images, one per value: a reference whose matched output is that value."""
    return [np.full(shape, v, dtype=dtype) for v in values]


def _expected(refs, image, params) -> np.ndarray:
    """What HistogramMatcher fitted on the one sampled reference gives."""
    matcher = HistogramMatcher(strength=params["strength"])
    matcher.fit([refs[params["reference"]]])
    return matcher.transform([image])[0]


@pytest.fixture(scope="module")
def refs() -> list[np.ndarray]:
    return _refs_rgb()


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return load("astronaut")[::4, ::4]


# ------------------------------------------------------------ seeding, p, replay


def test_seeded_sequences_repeat(refs, source):
    a = RandomHistogramMatching(p=0.7, random_state=42).fit(refs)
    b = RandomHistogramMatching(p=0.7, random_state=42).fit(refs)
    outs_a = [a(source) for _ in range(12)]
    outs_b = [b(source) for _ in range(12)]
    for x, y in zip(outs_a, outs_b):
        np.testing.assert_array_equal(x, y)
    # the draws do vary along the sequence (some applied, some not, several references)
    c = RandomHistogramMatching(p=0.7, random_state=42).fit(refs)
    params = [c.sample_params() for _ in range(30)]
    assert len({p["reference"] for p in params}) == 3
    assert {p["apply"] for p in params} == {True, False}
    assert len({p["strength"] for p in params}) == 30


def test_fit_restarts_the_stream_and_seeds_differ(refs):
    aug = RandomHistogramMatching(random_state=7).fit(refs)
    first = [aug.sample_params() for _ in range(5)]
    aug.fit(refs)
    assert [aug.sample_params() for _ in range(5)] == first
    other = RandomHistogramMatching(random_state=8).fit(refs)
    assert [other.sample_params() for _ in range(5)] != first


def test_generator_random_state_is_used_as_is(refs):
    expected = np.random.default_rng(5)
    expected.integers(np.iinfo(np.int32).max)  # fit seeds the methods from it once
    draws = expected.random(6)
    aug = RandomHistogramMatching(random_state=np.random.default_rng(5), p=1.0).fit(refs)
    p1, p2 = aug.sample_params(), aug.sample_params()
    assert p1["strength"] == pytest.approx(0.5 + 0.5 * draws[2])
    assert p2["reference"] == int(draws[4] * 3)


def test_call_equals_apply_of_sampled_params(refs, source):
    a = RandomHistogramMatching(p=0.6, random_state=3).fit(refs)
    b = RandomHistogramMatching(p=0.6, random_state=3).fit(refs)
    for _ in range(8):
        np.testing.assert_array_equal(a(source), b.apply(source, b.sample_params()))


def test_each_output_is_matched_to_one_reference(refs, source):
    """Replay: every applied call equals HistogramMatcher on the sampled reference."""
    a = RandomHistogramMatching(p=1.0, random_state=11).fit(refs)
    b = RandomHistogramMatching(p=1.0, random_state=11).fit(refs)
    seen = set()
    for _ in range(9):
        params = b.sample_params()
        seen.add(params["reference"])
        np.testing.assert_array_equal(a(source), _expected(refs, source, params))
    assert seen == {0, 1, 2}


@pytest.mark.parametrize("method", available_methods())
def test_every_method_replays_its_matcher(method):
    """Same machinery as HistogramMatcher for every registered method."""
    refs = [r[::2, ::2] for r in _refs_rgb()]
    source = load("astronaut")[::8, ::8]
    extra = {"n_iter": 3} if method == "lab" else {}
    aug = RandomHistogramMatching(HistogramMatcher(method, **extra), p=1.0, random_state=1)
    aug.fit(refs)
    assert aug.method_ == method
    for _ in range(2):
        params = aug.sample_params()
        matcher = HistogramMatcher(
            method, strength=params["strength"], random_state=1, **extra
        ).fit([refs[params["reference"]]])
        np.testing.assert_array_equal(aug.apply(source, params), matcher.transform([source])[0])


def test_full_strength_output_is_closest_to_its_reference(refs, source):
    """Independent of HistogramMatcher: at strength 1 the output's distribution is the
    sampled reference's (and not another one)."""
    aug = RandomHistogramMatching(strength=1.0, p=1.0, random_state=0).fit(refs)
    for _ in range(6):
        params = aug.sample_params()
        out = aug.apply(source, params)
        for c in range(3):
            dist = [wasserstein_1d(out[..., c].ravel(), r[..., c].ravel()) for r in refs]
            mine = dist.pop(params["reference"])
            assert mine < 2.0 and mine < min(dist) / 4


def test_p_zero_is_the_identity(refs, source):
    aug = RandomHistogramMatching(p=0.0, random_state=0).fit(refs)
    pil = Image.fromarray(source)
    for _ in range(20):
        assert aug(source) is source
        assert aug(pil) is pil
    assert not any(aug.sample_params()["apply"] for _ in range(200))


def test_p_one_always_applies(refs, source):
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    assert all(aug.sample_params()["apply"] for _ in range(200))
    assert not np.array_equal(aug(source), source)


def test_p_and_strength_do_not_shift_the_stream(refs):
    """Same seed, different p / strength: the same references are drawn."""
    a = RandomHistogramMatching(p=0.2, strength=0.3, random_state=4).fit(refs)
    b = RandomHistogramMatching(p=0.9, strength=(0.0, 1.0), random_state=4).fit(refs)
    pa = [a.sample_params() for _ in range(20)]
    pb = [b.sample_params() for _ in range(20)]
    assert [p["reference"] for p in pa] == [p["reference"] for p in pb]
    assert all(p["strength"] == 0.3 for p in pa)
    assert sum(p["apply"] for p in pa) < sum(p["apply"] for p in pb)


def test_references_drawn_uniformly():
    aug = RandomHistogramMatching(random_state=0).fit(_levels([10, 60, 120, 240]))
    counts = np.bincount([aug.sample_params()["reference"] for _ in range(4000)], minlength=4)
    assert counts.min() > 900 and counts.max() < 1100


def test_strength_within_range(refs):
    aug = RandomHistogramMatching(strength=(0.2, 0.4), random_state=1).fit(refs)
    strengths = np.array([aug.sample_params()["strength"] for _ in range(500)])
    assert strengths.min() >= 0.2 and strengths.max() <= 0.4
    assert strengths.max() - strengths.min() > 0.15


def test_params_are_plain_builtins(refs):
    params = RandomHistogramMatching(random_state=0).fit(refs).sample_params()
    assert set(params) == {"apply", "reference", "strength"}
    assert type(params["apply"]) is bool
    assert type(params["reference"]) is int
    assert type(params["strength"]) is float


def test_set_params_takes_effect_at_next_call(refs, source):
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    aug.set_params(p=0.0)
    assert aug(source) is source


# ------------------------------------------------------------- input kinds


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
@pytest.mark.parametrize("grey", [False, True])
def test_numpy_dtype_and_shape_kept(dtype, grey):
    rng = np.random.default_rng(0)
    shape = (20, 24) if grey else (20, 24, 3)
    if np.dtype(dtype).kind == "f":
        refs = [rng.normal(m, 1.0, size=shape).astype(dtype) for m in (-3.0, 5.0)]
        image = rng.uniform(0, 1, size=(9, 11, *shape[2:])).astype(dtype)
    else:
        info = np.iinfo(dtype)
        refs = [rng.integers(info.min, info.max, size=shape, dtype=dtype) for _ in range(2)]
        image = rng.integers(info.min, info.max, size=(9, 11, *shape[2:]), dtype=dtype)
    before = image.copy()
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    params = aug.sample_params()
    out = aug.apply(image, params)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(image, before)
    matcher = HistogramMatcher(strength=params["strength"]).fit([refs[params["reference"]]])
    np.testing.assert_array_equal(out, matcher.transform([image])[0])


@settings(max_examples=40, deadline=None)
@given(
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
    height=st.integers(1, 12),
    width=st.integers(1, 12),
    channels=st.sampled_from([1, 3]),
    seed=st.integers(0, 2**16),
    p=st.floats(0.0, 1.0),
)
def test_property_dtype_shape_monotone_and_input_untouched(
    dtype, height, width, channels, seed, p
):
    """Invariants over random images: dtype and shape kept, input untouched, every
    channel mapped monotonically, and equal inputs give equal outputs."""
    rng = np.random.default_rng(seed)
    hi = 255 if dtype == np.uint8 else 4000
    refs = [rng.integers(0, hi, size=(8, 8, channels)).astype(dtype) for _ in range(3)]
    image = rng.integers(0, hi, size=(height, width, channels)).astype(dtype)
    before = image.copy()
    aug = RandomHistogramMatching(p=p, random_state=seed).fit(refs)
    out = aug(image)
    assert out.shape == image.shape and out.dtype == image.dtype
    np.testing.assert_array_equal(image, before)
    for c in range(channels):
        order = np.argsort(image[..., c], axis=None, kind="stable")
        mapped = out[..., c].ravel()[order]
        assert np.all(np.diff(mapped.astype(np.float64)) >= 0)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_pil_in_pil_out(mode):
    rng = np.random.default_rng(1)
    channels = {"RGB": 3, "L": 1, "RGBA": 3}[mode]
    refs = [rng.integers(100, 200, size=(16, 16, channels), dtype=np.uint8)]
    if channels == 1:
        refs = [r[..., 0] for r in refs]
    arr = rng.integers(0, 256, size=(12, 10, len(mode)), dtype=np.uint8)
    image = Image.fromarray(arr[..., 0] if mode == "L" else arr, mode=mode)
    aug = RandomHistogramMatching(strength=1.0, p=1.0, random_state=0).fit(refs)
    out = aug(image)
    assert isinstance(out, Image.Image)
    assert out.mode == mode and out.size == image.size
    values = np.asarray(out)
    colour = values[..., :3] if mode == "RGBA" else values
    assert colour.min() >= 100 and colour.max() <= 199
    if mode == "RGBA":  # alpha passes through
        np.testing.assert_array_equal(values[..., 3], arr[..., 3])


def test_masks_and_other_keywords_pass_through(refs, source):
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    twin = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    mask = np.zeros(source.shape[:2], dtype=np.uint8)
    mask[10:20, 5:40] = 3
    mask_before = mask.copy()
    boxes = [(1, 2, 3, 4)]
    result = aug(image=source, mask=mask, bboxes=boxes)
    assert set(result) == {"image", "mask", "bboxes"}
    assert result["mask"] is mask and result["bboxes"] is boxes
    np.testing.assert_array_equal(mask, mask_before)
    np.testing.assert_array_equal(result["image"], twin(source))
    # positional image plus keywords gives the dict as well
    result = aug(source, mask=mask)
    assert result["mask"] is mask
    np.testing.assert_array_equal(result["image"], twin(source))
    # the mask does not restrict matching: the whole image is changed
    assert not np.array_equal(result["image"][mask == 0], source[mask == 0])


def test_call_argument_errors(refs, source):
    aug = RandomHistogramMatching().fit(refs)
    with pytest.raises(TypeError, match="one image positionally"):
        aug(source, source)
    with pytest.raises(TypeError, match="both positionally and as a keyword"):
        aug(source, image=source)
    with pytest.raises(TypeError, match="an image is required"):
        aug(mask=source)


# -------------------------------------------------------------------- groups


def test_grouped_references_pool_each_group(refs, source):
    images = [refs[0], refs[1], refs[0][::2, ::2], refs[2]]
    groups = ["site-b", "site-a", "site-b", "site-a"]
    aug = RandomHistogramMatching(p=1.0, strength=1.0, random_state=0).fit(images, groups)
    assert aug.n_references_ == 2
    assert aug.reference_labels_.tolist() == ["site-a", "site-b"]
    assert aug.n_images_seen_ == 4
    pooled_a = HistogramMatcher().fit([images[1], images[3]])
    pooled_b = HistogramMatcher().fit([images[0], images[2]])
    np.testing.assert_array_equal(
        aug.references_[0]["histograms"], pooled_a.reference_["histograms"]
    )
    np.testing.assert_array_equal(
        aug.references_[1]["histograms"], pooled_b.reference_["histograms"]
    )
    for _ in range(4):
        params = aug.sample_params()
        expected = (pooled_a, pooled_b)[params["reference"]].transform([source])[0]
        np.testing.assert_array_equal(aug.apply(source, params), expected)


def test_ungrouped_labels_are_image_indices(refs):
    aug = RandomHistogramMatching().fit(np.stack([r[:50, :50] for r in refs]))
    assert aug.reference_labels_.tolist() == [0, 1, 2]
    assert aug.n_references_ == 3


def test_fit_with_masks(refs):
    masks = [np.zeros(r.shape[:2], dtype=bool) for r in refs]
    for m in masks:
        m[:10, :10] = True
    aug = RandomHistogramMatching().fit(refs, mask=masks)
    assert aug.references_[1]["histograms"].sum(axis=1).tolist() == [100, 100, 100]


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strength": 1.5}, "'strength' parameter"),
        ({"strength": (0.8, 0.2)}, "0 <= low <= high <= 1"),
        ({"strength": (0.2, 1.2)}, "0 <= low <= high <= 1"),
        ({"strength": (0.2, 0.5, 0.9)}, "a pair"),
        ({"strength": "high"}, "'strength' parameter"),
        ({"p": 2.0}, "'p' parameter"),
        ({"matcher": "lab"}, "'matcher' parameter"),
        ({"matcher": HistogramMatcher("nope")}, "'method' parameter"),
        ({"matcher": HistogramMatcher(n_iter=0)}, "'n_iter' parameter"),
        ({"random_state": "x"}, "'random_state' parameter"),
    ],
)
def test_invalid_parameters(refs, kwargs, message):
    aug = RandomHistogramMatching(**kwargs)
    with pytest.raises(ValueError, match=message):
        aug.fit(refs)
    assert not hasattr(aug, "references_")


def test_matcher_configures_the_method_and_nested_params_work(refs, source):
    aug = RandomHistogramMatching(HistogramMatcher("lab", n_iter=4), p=1.0, random_state=2)
    assert aug.get_params()["matcher__n_iter"] == 4
    aug.set_params(matcher__n_iter=3, matcher__lab_mode="marginal").fit(refs)
    assert aug.method_ == "lab" and aug.matcher.n_iter == 3
    assert not hasattr(aug.matcher, "reference_")  # the given matcher is never fitted
    params = {"apply": True, "reference": 1, "strength": 1.0}
    expected = HistogramMatcher("lab", n_iter=3, lab_mode="marginal", random_state=2)
    np.testing.assert_array_equal(
        aug.apply(source, params), expected.fit([refs[1]]).transform([source])[0]
    )
    # the matcher's own strength does not matter: the drawn one is applied
    aug.set_params(matcher__strength=0.0)
    np.testing.assert_array_equal(
        aug.apply(source, params), expected.fit([refs[1]]).transform([source])[0]
    )


def test_invalid_groups_and_channels(refs, source):
    with pytest.raises(ValueError, match="one label per reference image"):
        RandomHistogramMatching().fit(refs, groups=[0, 1])
    aug = RandomHistogramMatching(p=1.0).fit(refs)
    with pytest.raises(ValueError, match="3 channel"):
        aug(source[..., 0])
    with pytest.raises(ValueError, match="one image of shape"):
        aug(np.stack([source, source]))


def test_invalid_params_dict(refs, source):
    aug = RandomHistogramMatching().fit(refs)
    with pytest.raises(ValueError, match="keys"):
        aug.apply(source, {"reference": 0})
    with pytest.raises(ValueError, match=r"params\['reference'\]"):
        aug.apply(source, {"apply": True, "reference": 3, "strength": 1.0})
    with pytest.raises(ValueError, match=r"params\['strength'\]"):
        aug.apply(source, {"apply": True, "reference": 0, "strength": 1.2})


def test_unfitted_raises(source):
    with pytest.raises(NotFittedError):
        RandomHistogramMatching()(source)


def test_fitted_attributes_are_plain(refs):
    aug = RandomHistogramMatching(random_state=0).fit(refs)
    assert isinstance(aug.references_, list)
    for state in aug.references_:
        assert all(isinstance(v, np.ndarray) for v in state.values())
    assert isinstance(aug.reference_labels_, np.ndarray)
    assert isinstance(aug.dtype_, str) and isinstance(aug.n_channels_, int)
    clone = pickle.loads(pickle.dumps(aug))
    assert clone.sample_params() == aug.sample_params()


# ------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, refs, source):
    pytest.importorskip("histmatch_ml.io")
    aug = RandomHistogramMatching(p=0.8, strength=(0.3, 0.9), random_state=5)
    aug.fit(refs, groups=["x", "y", "x"])
    path = tmp_path / "aug.npz"
    aug.save(path)
    loaded = RandomHistogramMatching.load(path)
    assert loaded.get_params() == aug.get_params()
    assert loaded.reference_labels_.tolist() == ["x", "y"]
    fresh = RandomHistogramMatching(p=0.8, strength=(0.3, 0.9), random_state=5)
    fresh.fit(refs, groups=["x", "y", "x"])
    for _ in range(5):
        np.testing.assert_array_equal(loaded(source), fresh(source))


# -------------------------------------------------------------------- torch


def test_torch_chw_uint8_and_float():
    torch = pytest.importorskip("torch")
    refs = _refs_rgb()
    source = load("astronaut")[::8, ::8]
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    twin = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    tensor = torch.from_numpy(source).permute(2, 0, 1).contiguous()
    before = tensor.clone()
    out = aug(tensor)
    assert isinstance(out, torch.Tensor)
    assert out.shape == tensor.shape and out.dtype == torch.uint8
    assert torch.equal(tensor, before)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), twin(source))
    # float tensors in [0, 1] against references in [0, 1]: never quantised
    ref_t = [torch.from_numpy(r).permute(2, 0, 1).double() / 255 for r in refs]
    for dtype in (torch.float32, torch.float64, torch.float16):
        aug_f = RandomHistogramMatching(p=1.0, random_state=0).fit(
            [r.to(torch.float32) for r in ref_t]
        )
        image = tensor.to(dtype) / 255
        out = aug_f(image)
        assert out.dtype == dtype and out.shape == image.shape
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    out32 = aug_f(tensor.float() / 255)
    assert len(torch.unique(out32)) > 256


def test_torch_nchw_draws_per_image_and_identity():
    torch = pytest.importorskip("torch")
    refs = _levels([20, 120, 220])
    aug = RandomHistogramMatching(p=1.0, strength=1.0, random_state=2).fit(refs)
    twin = RandomHistogramMatching(p=1.0, strength=1.0, random_state=2).fit(refs)
    batch = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    out = aug(batch)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    params = [twin.sample_params() for _ in range(6)]
    expected = [20, 120, 220]
    for i, p in enumerate(params):
        assert torch.all(out[i] == expected[p["reference"]])
    assert len({p["reference"] for p in params}) > 1
    torch.testing.assert_close(aug.apply(batch, params), out)
    with pytest.raises(ValueError, match="one dict per image"):
        aug.apply(batch, params[:2])
    none = RandomHistogramMatching(p=0.0).fit(refs)
    assert none(batch) is batch


def test_torch_fit_on_tensors_and_errors():
    torch = pytest.importorskip("torch")
    stack = torch.from_numpy(np.stack(_levels([5, 50]))).permute(0, 3, 1, 2)
    aug = RandomHistogramMatching().fit(stack)
    assert aug.n_references_ == 2 and aug.n_channels_ == 3
    aug_list = RandomHistogramMatching().fit(list(stack))
    np.testing.assert_array_equal(
        aug.references_[1]["histograms"], aug_list.references_[1]["histograms"]
    )
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        aug(torch.zeros((1, 1, 1, 3, 4, 4), dtype=torch.uint8))


# ----------------------------------------------------------- albumentations


def test_albumentations_compose_with_seed(refs, source):
    A = pytest.importorskip("albumentations")

    def run(seed):
        aug = RandomHistogramMatching(p=0.7, random_state=0).fit(refs)
        transform = aug.as_albumentations()
        pipeline = A.Compose([transform], seed=seed)
        outs, params = [], []
        for _ in range(10):
            outs.append(pipeline(image=source)["image"])
            params.append(dict(transform.params))
        return outs, params

    outs1, params1 = run(17)
    outs2, _ = run(17)
    outs3, _ = run(18)
    for x, y in zip(outs1, outs2):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(outs1, outs3))
    applied = [(o, p) for o, p in zip(outs1, params1) if p]
    assert 0 < len(applied) < 10  # albumentations decides p
    for out, p in applied:
        np.testing.assert_array_equal(out, _expected(refs, source, p))
    for out, p in zip(outs1, params1):
        if not p:
            np.testing.assert_array_equal(out, source)


def test_albumentations_serialisation(tmp_path, refs, source):
    A = pytest.importorskip("albumentations")
    pytest.importorskip("histmatch_ml.io")
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    with pytest.raises(ValueError, match="as_albumentations"):
        A.to_dict(A.Compose([aug.as_albumentations()]))
    path = tmp_path / "aug.npz"
    pipeline = A.Compose([aug.as_albumentations(path=path)], seed=3)
    as_dict = A.to_dict(pipeline)
    inner = as_dict["transform"]["transforms"][0]
    assert inner["model_path"] == str(path) and inner["p"] == 1.0
    rebuilt = A.from_dict(as_dict)
    rebuilt.set_random_seed(3)
    pipeline.set_random_seed(3)
    for _ in range(3):
        np.testing.assert_array_equal(
            rebuilt(image=source)["image"], pipeline(image=source)["image"]
        )
    file = tmp_path / "pipeline.json"
    A.save(pipeline, str(file))
    assert A.load(str(file)).transforms[0].augmenter.n_references_ == 3


def test_albumentations_adapter_pickles(refs, source):
    pytest.importorskip("albumentations")
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    transform = aug.as_albumentations()
    clone = pickle.loads(pickle.dumps(transform))
    np.testing.assert_array_equal(
        clone(image=source, force_apply=True)["image"],
        transform(image=source, force_apply=True)["image"],
    )


# ------------------------------------------------------ DataLoader workers


class AugmentedDataset:
    """A map-style dataset of identical tiny images passed through ``transform``.

    Module level so that DataLoader workers can pickle it.
    """

    def __init__(self, transform, n: int = 8) -> None:
        self.image = np.full((4, 4, 3), 128, dtype=np.uint8)
        self.transform = transform
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        info = torch.utils.data.get_worker_info()
        out = self.transform(image=self.image)["image"]
        return torch.from_numpy(np.ascontiguousarray(out)), -1 if info is None else info.id


def _epoch(dataset, seed):
    torch = pytest.importorskip("torch")
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=1,
        num_workers=2,
        generator=torch.Generator().manual_seed(seed),
    )
    return [(img[0].numpy(), int(wid)) for img, wid in loader]


def _check_workers(dataset):
    epoch1 = _epoch(dataset, 0)
    epoch2 = _epoch(dataset, 0)
    for (a, wa), (b, wb) in zip(epoch1, epoch2):
        assert wa == wb
        np.testing.assert_array_equal(a, b)
    by_worker = {w: [img for img, wid in epoch1 if wid == w] for w in (0, 1)}
    assert len(by_worker[0]) == len(by_worker[1]) == 4
    # a generator copied into each worker would give both the same sequence
    assert any(not np.array_equal(a, b) for a, b in zip(by_worker[0], by_worker[1]))
    # another DataLoader seed gives another epoch
    epoch3 = _epoch(dataset, 1)
    assert any(not np.array_equal(a, b) for (a, _), (b, _) in zip(epoch1, epoch3))


def test_dataloader_workers_reproducible_and_distinct():
    pytest.importorskip("torch")
    refs = _levels([10, 60, 110, 160, 210, 250])
    aug = RandomHistogramMatching(p=0.9, random_state=0).fit(refs)
    aug(np.zeros((4, 4, 3), dtype=np.uint8))  # a stream exists in the parent already
    _check_workers(AugmentedDataset(aug))


def test_dataloader_workers_albumentations_adapter():
    pytest.importorskip("torch")
    A = pytest.importorskip("albumentations")
    refs = _levels([10, 60, 110, 160, 210, 250])
    aug = RandomHistogramMatching(p=0.9, random_state=0).fit(refs)
    _check_workers(AugmentedDataset(A.Compose([aug.as_albumentations()], seed=0)))


def test_scale_mismatch_between_images_and_references_warns():
    refs = [np.full((8, 8, 3), v, dtype=np.uint8) for v in (10, 200)]
    aug = RandomHistogramMatching(HistogramMatcher(scale="raw"), p=1.0, random_state=0).fit(refs)
    image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    with pytest.warns(UserWarning, match="image has dtype float32 but the references were uint8"):
        out = aug(image)
    assert out.max() > 1  # on the references' 0..255 scale, as the warning says


def test_input_is_checked_even_when_the_draw_skips_matching(refs):
    aug = RandomHistogramMatching(p=0.0, random_state=0).fit(refs)
    with pytest.raises(ValueError, match="3 channel"):
        aug(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(TypeError, match="dtype"):
        aug(np.zeros((8, 8, 3), dtype=bool))
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    assert aug(image) is image


def _draws_in_a_child(aug, queue):
    queue.put([aug.sample_params()["strength"] for _ in range(5)])


def test_forked_worker_processes_draw_their_own_streams(refs):
    import multiprocessing

    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the fork start method")
    ctx = multiprocessing.get_context("fork")
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    aug.sample_params()  # the parent's stream exists before the workers are forked
    queue = ctx.Queue()
    workers = [ctx.Process(target=_draws_in_a_child, args=(aug, queue)) for _ in range(2)]
    for w in workers:
        w.start()
    draws = [queue.get(timeout=30) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    parent = [aug.sample_params()["strength"] for _ in range(5)]
    assert draws[0] != draws[1] and parent not in draws
