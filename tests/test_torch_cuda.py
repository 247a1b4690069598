"""The torch backend on a CUDA device: the checks of ``test_torch_backend.py`` there.

Skipped where torch or CUDA is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("CUDA is not available", allow_module_level=True)

import test_torch_backend as cpu  # noqa: E402

from histmatch_ml import HistogramMatcher, RandomHistogramMatching  # noqa: E402

DEVICE = "cuda"


@pytest.mark.parametrize("dtype", cpu.DTYPES)
@pytest.mark.parametrize("strength", [1.0, 0.4])
@pytest.mark.parametrize("masked", [False, True])
def test_per_channel_on_cuda_equals_numpy_path(dtype, strength, masked):
    refs, srcs = cpu.real_images()
    matcher = HistogramMatcher(strength=strength).fit(cpu.as_dtype(refs, dtype))
    x = cpu.to_tensor(cpu.as_dtype(srcs, dtype), DEVICE)
    mask = torch.from_numpy(np.random.default_rng(2).random((2, cpu.SIZE, cpu.SIZE)) < 0.5)
    mask = mask.to(DEVICE) if masked else None
    got = matcher.transform(x, mask=mask)
    assert got.device == x.device and got.dtype == x.dtype and got.shape == x.shape
    expected = cpu.numpy_path(matcher, x.cpu(), None if mask is None else mask.cpu())
    if dtype.startswith("float"):  # (CUDA may fuse multiply-adds: within 1e-5 of the range)
        span = float(x.max() - x.min())
        assert float((got.cpu().double() - expected.double()).abs().max()) <= 1e-5 * span
    else:
        assert torch.equal(got.cpu(), expected)


def test_tables_are_kept_per_device():
    refs, srcs = cpu.real_images()
    matcher = HistogramMatcher().fit(refs)
    x = cpu.to_tensor(srcs)
    assert torch.equal(matcher.transform(x.to(DEVICE)).cpu(), matcher.transform(x))


def test_batch_augmentation_on_cuda_equals_per_image_application():
    aug = cpu._augmenter(p=0.7, strength=(0.2, 1.0), random_state=0)
    _, srcs = cpu.real_images()
    x = cpu.to_tensor(np.concatenate([srcs, srcs[::-1]]), DEVICE)
    params = aug.sample_batch_params(len(x), generator=torch.Generator(DEVICE).manual_seed(0))
    got = aug.apply(x, params)
    assert got.device == x.device
    assert torch.equal(got.cpu(), aug.apply(x.cpu(), params))


def test_module_on_cuda():
    aug = cpu._augmenter(p=1.0, random_state=0)
    module = aug.as_torch_module(generator=torch.Generator(DEVICE).manual_seed(0))
    _, srcs = cpu.real_images()
    x = cpu.to_tensor(srcs, DEVICE)
    out = module(x)
    assert out.device == x.device and out.dtype == x.dtype and not torch.equal(out, x)


def assert_close_to(got: torch.Tensor, expected: torch.Tensor, like: torch.Tensor) -> None:
    """Integers identical; floats within 1e-5 of the value range (CUDA may fuse operations)."""
    assert got.device == like.device and got.dtype == like.dtype and got.shape == like.shape
    if like.dtype.is_floating_point:
        span = float(like.max() - like.min())
        assert float((got.cpu().double() - expected.double()).abs().max()) <= 1e-5 * span
    else:
        assert torch.equal(got.cpu(), expected)


@pytest.mark.parametrize("dtype", cpu.DTYPES)
@pytest.mark.parametrize("ordering", ["variational", "local_means"])
@pytest.mark.parametrize(("strength", "masked"), [(1.0, False), (0.4, True)])
def test_exact_on_cuda_equals_numpy_path(dtype, ordering, strength, masked):
    refs, srcs = cpu.real_images()
    matcher = HistogramMatcher("exact", ordering=ordering, strength=strength)
    matcher.fit(cpu.as_dtype(refs, dtype))
    x = cpu.to_tensor(cpu.as_dtype(srcs, dtype), DEVICE)
    mask = torch.from_numpy(np.random.default_rng(2).random((2, cpu.SIZE, cpu.SIZE)) < 0.5)
    mask = mask.to(DEVICE) if masked else None
    got = matcher.transform(x, mask=mask)
    expected = cpu.numpy_path(matcher, x.cpu(), None if mask is None else mask.cpu())
    assert_close_to(got, expected, x)


@pytest.mark.parametrize("dtype", cpu.DTYPES)
@pytest.mark.parametrize(("strength", "masked"), [(1.0, False), (0.4, True)])
def test_landmarks_on_cuda_equals_numpy_path(dtype, strength, masked):
    refs, srcs = cpu.real_images()
    matcher = HistogramMatcher("landmarks", strength=strength, standard_range=(0, 100))
    matcher.fit(cpu.as_dtype(refs, dtype))
    x = cpu.to_tensor(cpu.as_dtype(srcs, dtype), DEVICE)
    mask = torch.from_numpy(np.random.default_rng(2).random((2, cpu.SIZE, cpu.SIZE)) < 0.5)
    mask = mask.to(DEVICE) if masked else None
    got = matcher.transform(x, mask=mask)
    expected = cpu.numpy_path(matcher, x.cpu(), None if mask is None else mask.cpu())
    assert_close_to(got, expected, x)


@pytest.mark.parametrize(("method", "options"), cpu.VOLUME_METHODS)
@pytest.mark.parametrize("dtype", ["uint16", "float32"])
def test_volumes_on_cuda_equal_numpy_path(method, options, dtype):
    vols = cpu.real_volumes(dtype)
    matcher = HistogramMatcher(method, spatial_dims=3, strength=0.7, **options).fit(vols[::-1])
    x = torch.from_numpy(np.ascontiguousarray(vols[:, None])).to(DEVICE)
    mask = torch.from_numpy(np.random.default_rng(3).random(vols.shape) < 0.5)
    assert_close_to(matcher.transform(x), cpu.numpy_volumes(matcher, x.cpu()), x)
    got = matcher.transform(x, mask=mask.to(DEVICE))
    assert_close_to(got, cpu.numpy_volumes(matcher, x.cpu(), mask), x)


@pytest.mark.parametrize("method", ["exact", "landmarks"])
def test_batch_augmentation_of_every_kernel_on_cuda(method):
    refs, srcs = cpu.real_images()
    aug = RandomHistogramMatching(
        HistogramMatcher(method), p=0.7, strength=(0.2, 1.0), random_state=0
    ).fit(refs)
    x = cpu.to_tensor(np.concatenate([srcs, srcs[::-1]]), DEVICE)
    params = aug.sample_batch_params(len(x), generator=torch.Generator(DEVICE).manual_seed(0))
    got = aug.apply(x, params)
    assert got.device == x.device
    assert torch.equal(got.cpu(), aug.apply(x.cpu(), params))
