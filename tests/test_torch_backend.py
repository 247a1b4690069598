"""The torch backend (histmatch_ml.backends.torch) against the numpy kernels, on CPU tensors.

``tests/test_torch_cuda.py`` runs the same checks on a CUDA device when one is present.
"""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from sklearn.base import clone  # noqa: E402

from histmatch_ml import HistogramMatcher, RandomHistogramMatching  # noqa: E402

DEVICE = "cpu"
SIZE = 96


@pytest.fixture(autouse=True)
def kernels_on_cpu(monkeypatch):
    """Run the torch kernels on CPU tensors (by default those take the numpy kernels)."""
    from histmatch_ml.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", True)


@pytest.fixture
def kernel_calls(monkeypatch):
    """The methods whose torch kernel produced a result, call by call."""
    from histmatch_ml.backends import torch as torch_backend

    calls, kernel = [], torch_backend._match

    def recorded(method, *args, **kwargs):
        out = kernel(method, *args, **kwargs)
        calls.append(method if out is not None else None)
        return out

    monkeypatch.setattr(torch_backend, "_match", recorded)
    return calls


def test_cpu_tensors_take_the_numpy_kernels_by_default(monkeypatch):
    from histmatch_ml.backends import torch as torch_backend

    def refuse(*args, **kwargs):
        raise AssertionError("the torch kernel ran on a CPU tensor")

    refs, images = real_images()
    matcher = HistogramMatcher().fit(refs)
    x = to_tensor(images)
    mask = half_mask((x.shape[0], x.shape[2], x.shape[3]))
    kernel, kernel_masked = matcher.transform(x), matcher.transform(x, mask=mask)
    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    monkeypatch.setattr(torch_backend, "match_per_channel", refuse)
    numpy_out = matcher.transform(x)
    assert numpy_out.dtype == x.dtype and numpy_out.device == x.device
    assert torch.equal(numpy_out, kernel)
    assert torch.equal(matcher.transform(x, mask=mask), kernel_masked)  # (a bool tensor mask)
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(refs)
    assert aug(x).shape == x.shape


@pytest.mark.parametrize("dtype", ["uint8", "float32_levels", "float32", "uint16", "int8"])
@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("masked", [False, True])
def test_cpu_tensors_are_matched_channels_first(monkeypatch, dtype, strength, masked):
    """CPU tensors reach per_channel as planes, with no layout conversion: the same result."""
    from histmatch_ml import _images
    from histmatch_ml.backends import torch as torch_backend
    from histmatch_ml.methods import per_channel

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    planar, level_planes = [], per_channel.match_level_planes
    uint8_planes = per_channel.match_uint8_planes
    monkeypatch.setattr(
        per_channel, "match_level_planes", lambda *a: planar.append(level_planes(*a)) or planar[-1]
    )
    monkeypatch.setattr(  # (uint8 planes of a batch have their tables computed together)
        per_channel, "match_uint8_planes", lambda *a: planar.append(True) or uint8_planes(*a)
    )

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU tensor was converted to (H, W, C) on the way in")

    monkeypatch.setattr(_images, "_chw_to_hwc", refuse)
    refs, images = real_images()
    matcher = HistogramMatcher(strength=strength, n_jobs=2).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(images, dtype))
    before = x.clone()
    mask = half_mask((x.shape[0], x.shape[2], x.shape[3])) if masked else None
    got = matcher.transform(x, mask=mask)
    assert_same(got, numpy_path(matcher, x, mask), x)
    assert torch.equal(x, before)  # (the planes are only read)
    # 8-bit levels are matched plane by plane; other dtypes go through (H, W, C) copies
    assert planar and all(planar) == (dtype in ("uint8", "float32_levels"))
    one = matcher.transform(x[0], mask=None if mask is None else mask[0])
    assert_same(one, got[0] if mask is not None else numpy_path(matcher, x[:1])[0], x[0])
    for single, batched in zip(matcher.transform(list(x), mask=mask), got):  # a list of (C, H, W)
        assert_same(single, batched, x[0])


@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16", "int16"])
@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("masked", [False, True])
def test_cpu_tensor_planes_read_and_written_in_place(monkeypatch, dtype, strength, masked):
    """A channels-first float or 16-bit image of several bands: no channel copies, same result."""
    from histmatch_ml.backends import torch as torch_backend
    from histmatch_ml.methods import per_channel

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    copies = []
    for name in ("channel_into", "channel_from", "split_into"):
        kernel = getattr(per_channel, name)
        monkeypatch.setattr(
            per_channel, name, lambda *a, k=kernel, n=name: copies.append(n) or k(*a)
        )
    rng = np.random.default_rng(4)
    refs, _ = real_images()
    photo = np.stack([skdata.astronaut()[:300, :280], skdata.coffee()[:300, :280]])
    assert per_channel.MIN_BAND_PIXELS < 300 * 280  # (several bands of rows)
    matcher = HistogramMatcher(strength=strength).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(photo, dtype))
    mask = torch.from_numpy(rng.random((2, 300, 280)) < 0.6) if masked else None
    got = matcher.transform(x, mask=mask)
    assert copies == []
    assert_same(got, numpy_path(matcher, x, mask), x)
    assert copies  # (the arrays: interleaved channels, copied by bands)


@pytest.mark.parametrize(
    "method, options",
    [
        ("exact", {"ordering": "variational"}),
        ("exact", {"ordering": "local_means"}),
        ("landmarks", {}),
        ("landmarks", {"standard_range": (0, 100)}),
    ],
)
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("masked", [False, True])
def test_cpu_tensors_reach_exact_and_landmarks_as_planes(
    monkeypatch, method, options, dtype, strength, masked
):
    """exact and landmarks read and write a CPU tensor's planes: the arrays' result, to the bit."""
    from histmatch_ml import _images
    from histmatch_ml.backends import torch as torch_backend
    from histmatch_ml.methods import get_method

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU tensor was converted to (H, W, C) on the way in")

    monkeypatch.setattr(_images, "_chw_to_hwc", refuse)
    kind, layouts = type(get_method(method)), []
    apply_batch = kind.apply_batch

    def recorded(self, images, masks, state, tables, params, outs):
        for image, out in zip(images, outs):
            planar = (_images.planes_of(image) is not None, _images.planes_of(out) is not None)
            layouts.append(planar)
        return apply_batch(self, images, masks, state, tables, params, outs)

    monkeypatch.setattr(kind, "apply_batch", recorded)
    refs, images = real_images()
    matcher = HistogramMatcher(method, strength=strength, **options).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(images, dtype))
    before = x.clone()
    mask = half_mask((x.shape[0], x.shape[2], x.shape[3])) if masked else None
    got = matcher.transform(x, mask=mask)
    assert layouts == [(True, True)] * len(x)
    assert torch.equal(x, before)  # (the planes are only read)
    monkeypatch.setattr(_images, "_chw_to_hwc", lambda *a: pytest.fail("not reached"))
    layouts.clear()
    assert_same(got, numpy_path(matcher, x, mask), x)
    assert layouts == [(False, False)] * len(x)  # (the arrays: interleaved)


@pytest.mark.parametrize("shape", [(2, 3, 1, 1), (2, 3, 1, 7), (2, 3, 5, 1), (1, 4, 6, 6)])
def test_small_and_thin_cpu_tensors(monkeypatch, shape):
    from histmatch_ml.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    rng = np.random.default_rng(3)
    refs = rng.integers(0, 256, (2, 8, 8, shape[1]), dtype=np.uint8)
    matcher = HistogramMatcher().fit(refs)
    x = torch.from_numpy(rng.integers(0, 256, shape, dtype=np.uint8))
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)


@pytest.mark.parametrize("dtype", ["uint8", "float32_levels", "float32"])
def test_cpu_tensor_augmentation_reads_planes(monkeypatch, dtype):
    """RandomHistogramMatching on CPU tensors: channels-first planes, as arrays would give."""
    from histmatch_ml import _images
    from histmatch_ml.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)

    def refuse(*args, **kwargs):
        raise AssertionError("a CPU tensor was converted to (H, W, C) on the way in")

    monkeypatch.setattr(_images, "_chw_to_hwc", refuse)
    refs, images = real_images()
    aug = RandomHistogramMatching(p=1.0, random_state=0).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(images, dtype))
    before = x.clone()
    params = [aug.sample_params() for _ in range(len(x))]
    params[1] = {**params[1], "apply": False}
    got = aug.apply(x, params)
    assert torch.equal(x, before)
    for k, p in enumerate(params):
        image = np.ascontiguousarray(np.moveaxis(x[k].numpy(), 0, -1))
        expected = torch.from_numpy(np.ascontiguousarray(np.moveaxis(aug.apply(image, p), -1, 0)))
        assert_same(got[k], expected, x[k])
        assert_same(aug.apply(x[k], p), expected, x[k])  # one (C, H, W) tensor


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_cpu_batches_of_small_8_bit_images_augment_in_one_kernel_call(
    monkeypatch, kernel_calls, dtype
):
    """An augmenter's CPU batch of many small 8-bit images: the torch kernel, once, with
    each image's reference and strength, to the numpy path's bit; smaller batches and
    larger images stay on the numpy path."""
    from histmatch_ml.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    aug = _augmenter(dtype, p=0.7, strength=(0.2, 1.0), random_state=0)
    _, srcs = real_images()
    n, side = torch_backend.CPU_BATCH_IMAGES, 32
    crops = np.stack([srcs[k % 2, k : k + side, 2 * k : 2 * k + side] for k in range(n)])
    x = to_tensor(as_dtype(crops, dtype))
    params = [aug.sample_params() for _ in range(n)]
    got = aug.apply(x, params)
    assert kernel_calls == ["per_channel"]
    for k, p in enumerate(params):
        image = np.ascontiguousarray(np.moveaxis(x[k].numpy(), 0, -1))
        expected = torch.from_numpy(np.ascontiguousarray(np.moveaxis(aug.apply(image, p), -1, 0)))
        assert_same(got[k], expected, x[k])
    kernel_calls.clear()
    assert torch.equal(aug.apply(x[1:], params[1:]), got[1:])  # (one image fewer: numpy)
    assert aug(to_tensor(as_dtype(srcs[:, :65, :64], dtype)).repeat(8, 1, 1, 1)).shape[0] == 16
    assert kernel_calls == []


def test_cpu_tensors_of_half_precision_int16_and_strided_memory(monkeypatch):
    from histmatch_ml.backends import torch as torch_backend

    monkeypatch.setattr(torch_backend, "KERNELS_ON_CPU", False)
    refs, images = real_images()
    half = HistogramMatcher().fit(as_dtype(refs, "float32_levels"))
    x = to_tensor(as_dtype(images, "float32_levels")).half()
    assert_same(half.transform(x), numpy_path(half, x.float()).half(), x)
    wide = HistogramMatcher().fit(as_dtype(refs, "int16"))
    x = to_tensor(as_dtype(images, "int16"))
    assert_same(wide.transform(x), numpy_path(wide, x), x)
    strided = x[:, :, ::2, 1:]  # (not contiguous: read through a copy, never written)
    before = strided.clone()
    assert_same(wide.transform(strided), numpy_path(wide, strided), strided)
    assert torch.equal(strided, before)


def test_arrays_with_channels_first_memory_are_matched_as_arrays():
    refs, images = real_images()
    matcher = HistogramMatcher().fit(refs)
    x = to_tensor(images)
    view = np.moveaxis(x.numpy(), 1, -1)  # (N, H, W, C) whose memory is channels-first
    assert not view.flags.c_contiguous
    out = matcher.transform(view)
    assert isinstance(out, np.ndarray) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, matcher.transform(np.ascontiguousarray(view)))


def _crop(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[:SIZE, :SIZE])


def real_images() -> tuple[np.ndarray, np.ndarray]:
    """(references, sources): ``(2, SIZE, SIZE, 3)`` uint8 photographs each."""
    refs = np.stack([_crop(skdata.astronaut()), _crop(skdata.chelsea())])
    srcs = np.stack([_crop(skdata.coffee()), _crop(skdata.rocket())])
    return refs, srcs


def as_dtype(images: np.ndarray, dtype: str) -> np.ndarray:
    """8-bit photographs in ``dtype``: scaled levels, or floats with a little noise."""
    noise = np.random.default_rng(1).normal(0.0, 0.01, images.shape)
    return {
        "uint8": images,
        "int8": (images.astype(np.int16) - 128).astype(np.int8),
        "uint16": images.astype(np.uint16) * 257,
        "int16": images.astype(np.int16) * 100 - 12000,
        "float32": (images / 255 + noise).astype(np.float32),
        "float32_levels": (images / 255).astype(np.float32),
        "float64": images / 255 + noise,
    }[dtype]


def to_tensor(images: np.ndarray, device: str = DEVICE) -> torch.Tensor:
    """``(N, H, W, C)`` arrays as an ``(N, C, H, W)`` tensor."""
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1))).to(device)


def numpy_path(estimator, x: torch.Tensor, mask=None) -> torch.Tensor:
    """The numpy kernels' result for a tensor batch (images as a list of arrays)."""
    images = list(np.moveaxis(x.cpu().numpy(), 1, -1))
    if mask is not None:
        mask = list(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else mask)
    out = estimator.transform(images, mask=mask)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.stack(out), -1, 1)))


def half_mask(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(2).random(shape) < 0.5).to(DEVICE)


def assert_same(got: torch.Tensor, expected: torch.Tensor, like: torch.Tensor) -> None:
    assert got.dtype == like.dtype and got.shape == like.shape and got.device == like.device
    assert torch.equal(got.cpu(), expected.to(like.dtype).cpu())


DTYPES = ["uint8", "int8", "uint16", "int16", "float32", "float32_levels", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("masked", [False, True])
def test_per_channel_equals_numpy_path(dtype, strength, masked):
    """Every supported dtype, strength and mask: the numpy kernels' output, to the bit."""
    refs, srcs = real_images()
    matcher = HistogramMatcher(strength=strength).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(srcs, dtype))
    mask = half_mask((2, SIZE, SIZE)) if masked else None
    got = matcher.transform(x, mask=mask)
    assert_same(got, numpy_path(matcher, x, mask), x)
    if masked:
        keep = ~mask[:, None].expand_as(x)
        assert torch.equal(got[keep], x[keep])
    assert not torch.equal(got, x)


@pytest.mark.parametrize("dtype", ["uint16", "float32_levels"])
def test_other_reference_dtype_is_rescaled_as_numpy_does(dtype):
    """uint8 references, 16-bit or float images: the ``scale="dtype"`` tables."""
    refs, srcs = real_images()
    matcher = HistogramMatcher().fit(refs)
    x = to_tensor(as_dtype(srcs, dtype))
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)


def test_scale_warnings_as_numpy_path():
    refs, srcs = real_images()
    x = to_tensor(as_dtype(srcs, "float32_levels")) * 2
    with pytest.warns(UserWarning, match="scale='raw'"):
        HistogramMatcher().fit(refs).transform(x)
    with pytest.warns(UserWarning, match="scale='raw'"):
        HistogramMatcher(scale="raw").fit(refs).transform(x)


def test_float_references_of_distinct_values():
    """Float references (their distinct values and counts) against float images."""
    refs, srcs = real_images()
    matcher = HistogramMatcher().fit(as_dtype(refs, "float64").astype(np.float32))
    x = to_tensor(as_dtype(srcs, "float32"))
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_comes_back_in_its_dtype(dtype):
    refs, srcs = real_images()
    matcher = HistogramMatcher().fit(as_dtype(refs, "float32"))
    x = to_tensor(as_dtype(srcs, "float32")).to(dtype)
    got = matcher.transform(x)
    expected = numpy_path(matcher, x.float())
    assert got.dtype == dtype
    assert torch.equal(got, expected.to(dtype))


def test_single_images_and_grey_tensors():
    """(C, H, W) and (H, W) tensors come back in their shape."""
    refs, srcs = real_images()
    matcher = HistogramMatcher().fit(refs)
    x = to_tensor(srcs)
    one = matcher.transform(x[0])
    assert one.shape == x[0].shape and torch.equal(one, matcher.transform(x)[0])
    grey = HistogramMatcher().fit(refs[..., 0])
    plane = x[0, 0]
    out = grey.transform(plane)
    assert out.shape == plane.shape
    assert torch.equal(out, numpy_path(grey, plane[None, None])[0, 0])


def test_constant_channels_go_to_the_reference_median():
    refs, _ = real_images()
    matcher = HistogramMatcher().fit(as_dtype(refs, "float32"))
    x = torch.full((2, 3, 8, 8), 0.25)
    got = matcher.transform(x)
    assert_same(got, numpy_path(matcher, x), x)
    assert torch.equal(got, got[:, :, :1, :1].expand_as(got))


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 3),
    side=st.integers(1, 12),
    low=st.integers(0, 250),
    dtype=st.sampled_from(["uint8", "float32"]),
)
def test_random_batches_equal_numpy_path(seed, n, side, low, dtype):
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 256, (2, 9, 7, 3)).astype(np.uint8)
    images = rng.integers(low, 256, (n, side, side + 1, 3)).astype(np.uint8)
    if dtype == "float32":
        refs, images = (a.astype(np.float32) * np.float32(1.5) for a in (refs, images))
    matcher = HistogramMatcher(strength=float(rng.random())).fit(refs)
    x = to_tensor(images)
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)


def test_methods_without_kernel_take_the_numpy_path(kernel_calls):
    refs, srcs = real_images()
    matcher = HistogramMatcher("lab", n_iter=2, random_state=0).fit(refs)
    x = to_tensor(srcs)
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)
    assert kernel_calls == []


def test_device_tables_follow_fit_and_stay_out_of_copies(tmp_path):
    """Tables on the device are rebuilt after a new fit, and never pickled, cloned or saved."""
    refs, srcs = real_images()
    x = to_tensor(srcs)
    matcher = HistogramMatcher().fit(refs[:1])
    first = matcher.transform(x)
    matcher.fit(refs[1:])
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)
    assert not torch.equal(first, matcher.transform(x))
    restored = pickle.loads(pickle.dumps(matcher))
    assert torch.equal(restored.transform(x), matcher.transform(x))
    assert torch.equal(copy.deepcopy(matcher).transform(x), matcher.transform(x))
    assert clone(matcher).get_params() == matcher.get_params()
    loaded = HistogramMatcher.load(matcher.save(tmp_path / "m.npz"))
    assert torch.equal(loaded.transform(x), matcher.transform(x))
    matcher.partial_fit(refs[:1])
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)


def test_numpy_masks_and_errors():
    refs, srcs = real_images()
    matcher = HistogramMatcher().fit(refs)
    x = to_tensor(srcs)
    mask = half_mask((2, SIZE, SIZE))
    assert torch.equal(matcher.transform(x, mask=mask.numpy()), matcher.transform(x, mask=mask))
    with pytest.raises(TypeError, match="mask must be boolean"):
        matcher.transform(x, mask=mask.to(torch.uint8))
    with pytest.raises(ValueError, match="mask must be one boolean mask per image"):
        matcher.transform(x, mask=mask[:1])
    with pytest.raises(ValueError, match="selects no pixels"):
        matcher.transform(x, mask=torch.zeros_like(mask))
    with pytest.raises(ValueError, match="channel"):
        matcher.transform(x[:, :2])
    bad = to_tensor(as_dtype(srcs, "float32"))
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="X must not contain NaN"):
        HistogramMatcher().fit(as_dtype(refs, "float32")).transform(bad)
    with pytest.raises(ValueError, match="channels-last"):
        matcher.transform(x.permute(0, 2, 3, 1))


def test_input_is_never_modified():
    refs, srcs = real_images()
    x = to_tensor(as_dtype(srcs, "float32"))
    before = x.clone()
    HistogramMatcher(strength=0.5).fit(refs).transform(x, mask=half_mask((2, SIZE, SIZE)))
    assert torch.equal(x, before)


# -------------------------------------------------------------------------- augmentation
def _augmenter(dtype: str = "uint8", **kwargs) -> RandomHistogramMatching:
    refs, _ = real_images()
    more = np.stack([refs[0][::-1], 255 - refs[1]])
    return RandomHistogramMatching(**kwargs).fit(as_dtype(np.concatenate([refs, more]), dtype))


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
def test_batch_augmentation_equals_per_image_application(dtype):
    """One batched call gives each image its own reference and strength, as ``apply`` would."""
    aug = _augmenter(dtype, p=0.7, strength=(0.2, 1.0), random_state=0)
    _, srcs = real_images()
    x = to_tensor(as_dtype(np.concatenate([srcs, srcs[::-1], srcs]), dtype))
    params = [aug.sample_params() for _ in range(len(x))]
    got = aug.apply(x, params)
    for k, p in enumerate(params):
        image = np.moveaxis(x[k].cpu().numpy(), 0, -1)
        expected = torch.from_numpy(np.moveaxis(aug.apply(image, p), -1, 0))
        assert torch.equal(got[k].cpu(), expected), (k, p)
    assert got.device == x.device and got.dtype == x.dtype


def test_batch_augmentation_is_reproducible():
    _, srcs = real_images()
    x = to_tensor(np.concatenate([srcs] * 3))
    a = _augmenter(p=0.8, random_state=3)
    b = _augmenter(p=0.8, random_state=3)
    assert torch.equal(a(x), b(x))
    assert torch.equal(a(x), b(x))  # (the streams continue alike)
    gen = torch.Generator().manual_seed(5)
    first = a.sample_batch_params(len(x), generator=gen)
    gen.manual_seed(5)
    assert a.sample_batch_params(len(x), generator=gen) == first
    assert len({p["reference"] for p in first}) > 1


def test_torch_module_in_a_training_loop():
    """The module after a DataLoader: augments each batch, trains a tiny model."""
    _, srcs = real_images()
    images = to_tensor(np.concatenate([srcs[:, :32, :32]] * 4))
    labels = torch.arange(len(images)) % 2
    module = _augmenter(p=1.0, strength=1.0, random_state=0).as_torch_module(
        generator=torch.Generator().manual_seed(0)
    )
    assert isinstance(module, torch.nn.Module)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels), batch_size=4, shuffle=False
    )
    before = [p.detach().clone() for p in model.parameters()]
    for batch, target in loader:
        augmented = module(batch)
        assert augmented.shape == batch.shape and augmented.dtype == batch.dtype
        assert not torch.equal(augmented, batch)
        loss = torch.nn.functional.cross_entropy(model(augmented.float() / 255), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    first = next(iter(loader))[0]
    twins = [
        _augmenter(p=1.0, random_state=0).as_torch_module(
            generator=torch.Generator().manual_seed(7)
        )
        for _ in range(2)
    ]
    assert torch.equal(twins[0](first), twins[1](first))


def test_batch_augmentation_checks_and_passes_through():
    aug = _augmenter(p=1.0, random_state=0)
    _, srcs = real_images()
    x = to_tensor(srcs)
    skip = [{"apply": False, "reference": 0, "strength": 1.0}] * len(x)
    assert aug.apply(x, skip) is x
    with pytest.raises(ValueError, match="channel"):
        aug.apply(x[:, :2], skip)
    with pytest.raises(ValueError, match="one dict per image"):
        aug.apply(x, skip[:1])
    bad = x.float()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        aug.apply(bad, aug.sample_batch_params(len(x)))


def test_augmenter_device_tables_follow_fit_and_pickle_empty():
    _, srcs = real_images()
    x = to_tensor(srcs)
    aug = _augmenter(p=1.0, strength=1.0, random_state=0)
    params = [{"apply": True, "reference": 1, "strength": 1.0}] * len(x)
    first = aug.apply(x, params)
    assert torch.equal(pickle.loads(pickle.dumps(aug)).apply(x, params), first)
    refs, _ = real_images()
    aug.fit(refs[::-1])
    refit = aug.apply(x, params)
    assert not torch.equal(refit, first)
    assert torch.equal(refit, _augmenter(p=1.0).fit(refs[::-1]).apply(x, params))


# ------------------------------------------------------------------------------ exact
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ordering", ["variational", "local_means"])
@pytest.mark.parametrize(("strength", "masked"), [(1.0, False), (0.4, True)])
def test_exact_equals_numpy_path(dtype, ordering, strength, masked, kernel_calls):
    """Both orderings, every dtype, strength and masks: the numpy kernel's output, to the bit."""
    refs, srcs = real_images()
    matcher = HistogramMatcher("exact", ordering=ordering, strength=strength)
    matcher.fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(srcs, dtype))
    mask = half_mask((2, SIZE, SIZE)) if masked else None
    got = matcher.transform(x, mask=mask)
    assert kernel_calls == ["exact"]
    assert_same(got, numpy_path(matcher, x, mask), x)
    if masked:
        keep = ~mask[:, None].expand_as(x)
        assert torch.equal(got[keep], x[keep])


def test_exact_gives_each_image_the_reference_histogram(kernel_calls):
    """Images of the reference's pixel count get its histogram, level for level."""
    refs, srcs = real_images()
    matcher = HistogramMatcher("exact").fit(refs[:1])
    out = matcher.transform(to_tensor(srcs))
    assert kernel_calls == ["exact"]
    for image in out:
        for c in range(3):
            got = torch.bincount(image[c].flatten(), minlength=256).numpy()
            assert np.array_equal(got, np.bincount(refs[0, ..., c].ravel(), minlength=256))


@pytest.mark.parametrize("dtype", ["uint16", "float32_levels", "float32"])
def test_exact_other_reference_dtype_and_float_references(dtype, kernel_calls):
    """uint8 references for 16-bit or float images (rescaled levels), float references."""
    refs, srcs = real_images()
    fitted = refs if dtype != "float32" else as_dtype(refs, "float64").astype(np.float32)
    matcher = HistogramMatcher("exact").fit(fitted)
    x = to_tensor(as_dtype(srcs, dtype))
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)
    assert kernel_calls == ["exact"]


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(1, 3),
    side=st.integers(1, 9),
    levels=st.integers(1, 256),
    ordering=st.sampled_from(["variational", "local_means"]),
    dtype=st.sampled_from(["uint8", "float64"]),
)
def test_exact_random_batches_equal_numpy_path(seed, n, side, levels, ordering, dtype):
    """Small, flat and tiny images (ties everywhere, borders mirrored) and odd pixel counts."""
    rng = np.random.default_rng(seed)
    refs = rng.integers(0, 256, (2, 7, 5, 3)).astype(np.uint8)
    images = rng.integers(0, levels, (n, side, side + 2, 3)).astype(np.uint8)
    if dtype == "float64":
        refs, images = refs / 255, images / 7.0
    matcher = HistogramMatcher("exact", ordering=ordering, strength=float(rng.random()))
    matcher.fit(refs)
    x = to_tensor(images)
    mask = torch.from_numpy(rng.random((n, side, side + 2)) < 0.7)
    mask[:, 0, 0] = True
    assert_same(matcher.transform(x), numpy_path(matcher, x), x)
    assert_same(matcher.transform(x, mask=mask), numpy_path(matcher, x, mask), x)


# -------------------------------------------------------------------------- landmarks
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("strength", "masked"), [(1.0, False), (0.4, True)])
@pytest.mark.parametrize("standard_range", [None, (0, 100)])
def test_landmarks_equals_numpy_path(dtype, strength, masked, standard_range, kernel_calls):
    refs, srcs = real_images()
    matcher = HistogramMatcher("landmarks", strength=strength, standard_range=standard_range)
    matcher.fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(srcs, dtype))
    mask = half_mask((2, SIZE, SIZE)) if masked else None
    got = matcher.transform(x, mask=mask)
    assert kernel_calls == ["landmarks"]
    assert_same(got, numpy_path(matcher, x, mask), x)
    assert not torch.equal(got, x)


def test_landmarks_barycenter_and_own_percentiles(kernel_calls):
    refs, srcs = real_images()
    matcher = HistogramMatcher(
        "landmarks", reference="barycenter", landmarks=(2, 25, 50, 75, 98), standard_range=(0, 1)
    ).fit(as_dtype(refs, "float32"))
    x = to_tensor(as_dtype(srcs, "float32"))
    got = matcher.transform(x)
    assert kernel_calls == ["landmarks"]
    assert_same(got, numpy_path(matcher, x), x)


# ---------------------------------------------------------------------------- volumes
def real_volumes(dtype: str = "uint16") -> np.ndarray:
    """``(2, 10, 40, 48)`` volumes: shifted crops of ``camera`` and ``moon`` stacked as slices."""
    planes = [skdata.camera(), skdata.moon()]
    vols = np.stack(
        [np.stack([p[9 * i : 9 * i + 40, 3 * i : 3 * i + 48] for i in range(10)]) for p in planes]
    )
    return {
        "uint8": vols,
        "uint16": vols.astype(np.uint16) * 257,
        "int16": vols.astype(np.int16) * 100 - 12000,
        "float32": as_dtype(vols, "float32"),
    }[dtype]


def numpy_volumes(estimator, x: torch.Tensor, mask=None) -> torch.Tensor:
    """The numpy kernels' result for an ``(N, C, D, H, W)`` tensor (volumes as arrays)."""
    vols = list(np.moveaxis(x.cpu().numpy(), 1, -1))
    masks = None if mask is None else list(mask.cpu().numpy())
    out = estimator.transform(vols, mask=masks)
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.stack(out), -1, 1)))


VOLUME_METHODS = [
    ("per_channel", {}),
    ("exact", {"ordering": "variational"}),
    ("exact", {"ordering": "local_means"}),
    ("landmarks", {"standard_range": (0, 1000)}),
]


@pytest.mark.parametrize(("method", "options"), VOLUME_METHODS)
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
def test_volumes_equal_numpy_path(method, options, dtype, kernel_calls):
    """``(N, C, D, H, W)`` with ``spatial_dims=3`` (3-D orderings for exact), masked too."""
    vols = real_volumes(dtype)
    matcher = HistogramMatcher(method, spatial_dims=3, strength=0.7, **options).fit(vols[::-1])
    x = torch.from_numpy(np.ascontiguousarray(vols[:, None]))
    mask = torch.from_numpy(np.random.default_rng(3).random(vols.shape) < 0.5)
    assert_same(matcher.transform(x), numpy_volumes(matcher, x), x)
    assert_same(matcher.transform(x, mask=mask), numpy_volumes(matcher, x, mask), x)
    assert kernel_calls == [method, method]
    one = matcher.transform(x[0])  # (C, D, H, W)
    assert one.shape == x[0].shape and torch.equal(one, matcher.transform(x)[0])


def test_volume_masks_are_checked():
    vols = real_volumes()
    matcher = HistogramMatcher(spatial_dims=3).fit(vols)
    x = torch.from_numpy(np.ascontiguousarray(vols[:, None]))
    mask = np.ones(vols.shape, dtype=bool)
    assert torch.equal(matcher.transform(x, mask=mask), matcher.transform(x))
    with pytest.raises(ValueError, match="spatial shape"):
        matcher.transform(x, mask=torch.from_numpy(mask[:, :, :-1]))


# -------------------------------------------------------------------------- grid cells
@pytest.mark.parametrize("grid_cells", [1024, 300_000])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float32_levels"])
def test_per_channel_follows_grid_cells(grid_cells, dtype, kernel_calls):
    refs, srcs = real_images()
    matcher = HistogramMatcher(grid_cells=grid_cells, strength=0.6).fit(as_dtype(refs, dtype))
    x = to_tensor(as_dtype(srcs, dtype))
    mask = half_mask((2, SIZE, SIZE))
    assert_same(matcher.transform(x, mask=mask), numpy_path(matcher, x, mask), x)
    assert kernel_calls == ["per_channel"]


# ------------------------------------------------------------- augmentation, all kernels
@pytest.mark.parametrize(
    ("method", "options"),
    [("exact", {"ordering": "local_means"}), ("exact", {}), ("landmarks", {})],
)
def test_batch_augmentation_of_every_kernel_equals_per_image_application(
    method, options, kernel_calls
):
    refs, srcs = real_images()
    more = np.stack([refs[0][::-1], 255 - refs[1]])
    aug = RandomHistogramMatching(
        HistogramMatcher(method, **options), p=0.7, strength=(0.2, 1.0), random_state=0
    ).fit(np.concatenate([refs, more]))
    x = to_tensor(np.concatenate([srcs, srcs[::-1], srcs]))
    params = aug.sample_batch_params(len(x), generator=torch.Generator().manual_seed(4))
    got = aug.apply(x, params)
    assert kernel_calls == [method]
    for k, p in enumerate(params):
        image = np.moveaxis(x[k].numpy(), 0, -1)
        expected = torch.from_numpy(np.moveaxis(aug.apply(image, p), -1, 0))
        assert torch.equal(got[k], expected), (k, p)


def test_volume_batch_augmentation_equals_per_volume_application(kernel_calls):
    vols = real_volumes("float32")
    aug = RandomHistogramMatching(
        HistogramMatcher("landmarks", spatial_dims=3), p=1.0, strength=(0.3, 1.0), random_state=0
    ).fit([vols[0], vols[1], vols[0][::-1]])
    x = torch.from_numpy(np.ascontiguousarray(vols[:, None]))
    params = aug.sample_batch_params(len(x))
    got = aug.apply(x, params)
    assert kernel_calls == ["landmarks"]
    for k, p in enumerate(params):
        assert torch.equal(got[k], aug.apply(x[k], p))
