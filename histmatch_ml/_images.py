"""Input conventions: turn any accepted input into a list of ``(H, W, C)`` arrays.

This is the only module that knows about PIL images, lists of images, tabular
``(N, P)`` rows, object arrays, torch tensors (channels-first, given back with
their dtype and device) and channel layouts. Channels are split and
interleaved with OpenCV (:func:`split_into`, :func:`interleave_into`, :func:`channel_into`,
:func:`channel_from`), kept for
their measured worth on ``benchmarks/README.md``'s rows "uint16 RGB 512x512
(x257), fitted transform" and "torch uint8 CHW 512x512, one call".

Everything downstream (the reference state, the method kernels) sees a
:class:`Batch`: a list of C-contiguous ``(H, W, C)`` arrays of one supported
dtype, plus an optional list of boolean ``(H, W)`` masks. :func:`restore` turns
the processed arrays back into the caller's container.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

#: dtypes accepted as images; integer outputs are rounded and clipped to them.
SUPPORTED_DTYPES = (
    np.dtype(np.uint8),
    np.dtype(np.uint16),
    np.dtype(np.int16),
    np.dtype(np.float32),
    np.dtype(np.float64),
)
#: integer dtypes that are accepted too (the scikit-learn view of a feature
#: matrix); they have no exact histogram and are matched through float64.
WIDE_INT_DTYPES = (
    np.dtype(np.int8),
    np.dtype(np.int32),
    np.dtype(np.int64),
    np.dtype(np.uint32),
    np.dtype(np.uint64),
)
_DTYPE_NAMES = "uint8, uint16, int16, float32 or float64"

# PIL mode -> (numpy dtype, number of matched channels, passthrough alpha)
_PIL_MODES = {
    "L": (np.uint8, 1, False),
    "LA": (np.uint8, 1, True),
    "RGB": (np.uint8, 3, False),
    "RGBA": (np.uint8, 3, True),
    "I;16": (np.uint16, 1, False),
    "I": (np.uint16, 1, False),
    "F": (np.float32, 1, False),
}


@dataclass
class Batch:
    """Images normalised to ``(H, W, C)`` arrays, and how to give them back.

    Attributes
    ----------
    images : list of ndarray
        One ``(H, W, C)`` array per image, all of one dtype and channel count.
    masks : list of ndarray or None
        One boolean ``(H, W)`` array per image, or None (all pixels).
    kind : str
        The caller's container: ``"array4"``, ``"array3"``, ``"tabular"``,
        ``"list"``, ``"pil"`` or ``"tensor"``.
    meta : dict
        What :func:`restore` needs to rebuild the container.
    """

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return self.images[0].dtype

    @property
    def n_channels(self) -> int:
        return self.images[0].shape[2]

    @property
    def spatial_shapes(self) -> list[tuple[int, ...]] | None:
        """The ``(D, H, W)`` shape of every volume (``spatial_dims=3``), else None.

        Volumes are held as ``(D * H, W, C)`` arrays (a reshape, no copy), so
        kernels that treat pixels one by one see images; :meth:`volume` gives
        the ``(D, H, W, C)`` view for kernels that read neighbourhoods.
        """
        return self.meta.get("spatial")

    def volume(self, i: int, arr: np.ndarray | None) -> np.ndarray | None:
        """``arr`` (image ``i``'s ``(D * H, W[, C])`` array or mask) in its volume's shape."""
        shapes = self.spatial_shapes
        if arr is None or shapes is None:
            return arr
        return arr.reshape(shapes[i] + arr.shape[2:])

    @property
    def n_pixels(self) -> int:
        """Number of counted pixels (masked pixels only, when masks are given)."""
        if self.masks is None:
            return sum(im.shape[0] * im.shape[1] for im in self.images)
        return int(sum(int(m.sum()) for m in self.masks))


def is_tensor(obj: Any) -> bool:
    """True for a ``torch.Tensor`` (torch is never imported for this)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def is_dask_collection(obj: Any) -> bool:
    """True for a dask collection (array, bag, ...); dask is never imported for this."""
    dask = sys.modules.get("dask")
    return dask is not None and dask.is_dask_collection(obj)


def _from_tensor(tensor: Any, name: str, planar: bool = False) -> tuple[list[np.ndarray], dict]:
    """``(H, W, C)`` arrays of a channels-first tensor ``(H, W)``, ``(C, H, W)``, ``(N, C, H, W)``.

    The tensor is only read. float16/bfloat16 are matched as float32 and
    given back in their dtype (see :func:`_to_tensor`). With ``planar``, the
    arrays are channels-first views of the tensor's own memory (no copy, see
    :func:`planes_of`), for the methods whose kernels read planes.
    """
    import torch

    shape = tuple(tensor.shape)
    if tensor.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must be a channels-first tensor of shape (H, W), (C, H, W) or "
            f"(N, C, H, W); got shape {shape}"
        )
    if tensor.ndim >= 3 and shape[-3] > 4 and shape[-1] in (1, 3, 4):
        perm = "x.permute(2, 0, 1)" if tensor.ndim == 3 else "x.permute(0, 3, 1, 2)"
        raise ValueError(
            f"{name} looks channels-last (shape {shape}); tensors are read channels-first "
            f"(C, H, W) / (N, C, H, W): pass {perm}"
        )
    t = tensor.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    try:
        arr = t.numpy()
    except TypeError as exc:
        raise TypeError(
            f"{name} must be a tensor of dtype uint8, int16, float32 or float64; "
            f"got {tensor.dtype} ({exc})"
        ) from None
    if arr.ndim == 2:
        images = [arr[:, :, None]]
    elif planar:
        arr = np.ascontiguousarray(arr)
        images = [a.transpose(1, 2, 0) for a in (arr[None] if arr.ndim == 3 else arr)]
    elif arr.ndim == 3:
        images = [_chw_to_hwc(arr)]
    else:
        images = [_chw_to_hwc(a) for a in arr]
    return images, {"like": tensor}


def planes_of(image: np.ndarray) -> np.ndarray | None:
    """The contiguous ``(C, H, W)`` planes an ``(H, W, C)`` array is a view of, or None.

    Channels-first batches (CPU tensors, for methods with ``planar`` kernels)
    hold their images as such views, so the kernels can read and write whole
    planes without converting the layout.
    """
    planes = image.transpose(2, 0, 1)
    # (one channel, or one pixel: both layouts are the same memory; the (H, W, C) one is used)
    if image.shape[2] == 1 or image.shape[0] * image.shape[1] == 1:
        return None
    return planes if planes.flags.c_contiguous else None


def _chw_to_hwc(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(H, W, C)`` copy (or view, for one channel) of a ``(C, H, W)`` array."""
    if arr.shape[0] == 1:
        return arr.reshape(*arr.shape[1:], 1)
    out = np.empty((*arr.shape[1:], arr.shape[0]), dtype=arr.dtype)
    return interleave_into(np.ascontiguousarray(arr), out)


def _to_tensor(images: list[np.ndarray], like: Any) -> Any:
    """``(H, W, C)`` arrays as a tensor of the layout, dtype and device of ``like``."""
    import torch

    h, w, c = images[0].shape
    if len(images) == 1 and planes_of(images[0]) is not None:  # (channels-first already)
        full = planes_of(images[0])[None]
    elif all(planes_of(image) is not None for image in images):
        full = np.stack([planes_of(image) for image in images])
    else:
        full = np.empty((len(images), c, h, w), dtype=images[0].dtype)
        for image, out in zip(images, full):
            split_into(image, out)
    result = torch.from_numpy(
        full if like.ndim == 4 else full[0] if like.ndim == 3 else full[0, 0]
    )
    return result.to(device=like.device, dtype=like.dtype)


def _planes_to_tensor(full: np.ndarray, like: Any) -> Any:
    """``(N, C, H, W)`` planes as a tensor of the layout, dtype and device of ``like``."""
    import torch

    result = torch.from_numpy(full if like.ndim == 4 else full[0])
    return result.to(device=like.device, dtype=like.dtype)


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is a hard dependency
        return False
    return isinstance(obj, Image.Image)


def channel_mismatch(name: str, got: int, expected: int) -> ValueError:
    """The error for images whose channel count differs from the references', with the fix."""
    if got == 1 and expected in (3, 4):
        fix = (
            "convert grey images to colour (np.repeat(image[..., None], 3, axis=-1), or "
            "PIL's .convert('RGB')), or fit on grey references; method='luminance' matches "
            "grey images to the lightness of colour references"
        )
    elif expected == 1 and got in (3, 4):
        fix = (
            "convert colour images to grey (PIL's .convert('L')), or fit on colour references; "
            "method='luminance' matches the lightness of colour images to grey references"
        )
    elif got == 4 and expected == 3:
        fix = "drop the alpha channel (image[..., :3]), or pass a PIL RGBA image (alpha is kept)"
    else:
        fix = "give images and references the same channels"
    return ValueError(
        f"{name} must have {expected} channel(s), as the references; got {got}: {fix}"
    )


def check_dtype(arr: np.ndarray, name: str) -> np.ndarray:
    """Return ``arr`` with a supported dtype, or raise a clear error.

    Object arrays holding numbers are converted to float64, as scikit-learn
    does; complex, bool, string and object arrays of non-numbers are refused.
    """
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must hold numbers; got an object array that cannot be "
                f"converted to float64 ({exc})"
            ) from None
    if arr.dtype in SUPPORTED_DTYPES or arr.dtype in WIDE_INT_DTYPES:
        return arr
    if arr.dtype == np.float16:  # matched as float32; the output is cast back (see Batch)
        return arr.astype(np.float32)
    raise TypeError(f"{name} must have dtype {_DTYPE_NAMES}; got dtype {arr.dtype}")


def as_array(item: Any, name: str) -> np.ndarray:
    """``np.asarray(item)``, with ragged nested sequences refused in this library's words."""
    try:
        return np.asarray(item)
    except ValueError:
        raise ValueError(
            f"{name} must be an image (an array of one shape); got a ragged sequence "
            f"whose rows differ in length"
        ) from None


def not_finite_error(name: str = "X") -> ValueError:
    """The error for float images holding NaN or infinity."""
    return ValueError(f"{name} must not contain NaN or infinity")


def unit_scale(dtype: np.dtype) -> float:
    """What ``skimage.util.img_as_float`` maps to 1.0: an integer dtype's max, else 1.0.

    Unsigned integers meet floats on ``[0, 1]`` and signed ones on ``[-1, 1]``
    (``x / max``); the ``scale="dtype"`` rule reads images of another dtype
    than the references this way.

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._images import unit_scale
    >>> unit_scale(np.uint8), unit_scale(np.int16), unit_scale(np.float32)
    (255.0, 32767.0, 1.0)
    """
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


#: how far float images may exceed [-1, 1] and still be read on that scale without a warning
FLOAT_SLACK = 1e-3

#: 64-bit integers are matched through float64, which holds integers exactly up to here
_EXACT_INT = 2**53


def check_values(arr: np.ndarray, name: str) -> None:
    """Refuse values the kernels cannot match: NaN and infinity in floats, and 64-bit
    integers beyond +-2**53, which float64 (their work type) cannot hold exactly."""
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):  # (NaN propagates)
            raise not_finite_error(name)
    elif arr.dtype.itemsize == 8 and arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < -_EXACT_INT or hi > _EXACT_INT:
            raise ValueError(
                f"{name} must hold {arr.dtype} values within +-2**53 (float64 holds such "
                f"integers exactly, and 64-bit images are matched through float64); got "
                f"[{lo}, {hi}]: rescale it or convert it to float64"
            )


def _as_hwc(img: np.ndarray, name: str) -> np.ndarray:
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.ndim != 3:
        raise ValueError(
            f"{name} must be a 2-D (H, W) or 3-D (H, W, C) image; got shape {img.shape}"
        )
    if img.size == 0:
        raise ValueError(f"{name} must not be empty; got shape {img.shape}")
    return img


def _mask_list(mask: Any, shapes: list[tuple[int, int]], name: str) -> list[np.ndarray] | None:
    """Validate ``mask`` against the spatial shapes of the images."""
    if mask is None:
        return None
    if is_tensor(mask):  # (a bool tensor on any device, as the torch kernels take it)
        mask = mask.detach().cpu().numpy()
    elif isinstance(mask, (list, tuple)):
        mask = [m.detach().cpu().numpy() if is_tensor(m) else m for m in mask]
    if isinstance(mask, np.ndarray) and len(shapes) == 1 and mask.shape == shapes[0]:
        masks = [mask]
    elif isinstance(mask, np.ndarray) and mask.ndim == 3:
        masks = list(mask)
    elif isinstance(mask, (list, tuple)):
        masks = [np.asarray(m) for m in mask]
    elif isinstance(mask, np.ndarray) and mask.ndim == 2 and len(shapes) == mask.shape[0]:
        masks = list(mask[:, None, :])  # tabular rows: one (1, P) mask per row
    else:
        got = getattr(mask, "shape", type(mask).__name__)
        raise ValueError(
            f"{name} must be one boolean mask per image with the images' spatial "
            f"shape {shapes[0] if len(set(shapes)) == 1 else '(per image)'}; got {got}"
        )
    if len(masks) != len(shapes):
        raise ValueError(f"{name} must hold one mask per image ({len(shapes)}); got {len(masks)}")
    out = []
    for i, (m, shape) in enumerate(zip(masks, shapes)):
        m = np.asarray(m)
        if m.dtype != bool:
            raise TypeError(f"{name} must be boolean; got dtype {m.dtype} for image {i}")
        if m.shape != shape:
            raise ValueError(
                f"{name} for image {i} must have shape {shape} (the image's height and "
                f"width); got {m.shape}"
            )
        if not m.any():
            raise ValueError(f"{name} for image {i} selects no pixels")
        out.append(np.ascontiguousarray(m))
    return out


def is_tabular(X: Any) -> bool:
    """True for a 2-D feature matrix (the scikit-learn view), dense or sparse.

    That is a 2-D array-like (ndarray, DataFrame, sparse matrix) or a list of
    1-D rows; a list of 2-D/3-D items is a list of images instead.
    """
    if isinstance(X, np.ndarray):
        return X.ndim == 2
    from scipy import sparse  # (imported on use: the CLI starts without scipy/sklearn)

    if sparse.issparse(X):
        return True
    if _is_pil(X) or is_tensor(X):
        return False
    if isinstance(X, (list, tuple)):
        return len(X) > 0 and all(
            not _is_pil(r) and not is_tensor(r) and np.ndim(r) == 1 for r in X
        )
    return hasattr(X, "__array__") and np.asarray(X).ndim == 2


def to_batch(
    X: Any,
    mask: Any = None,
    *,
    name: str = "X",
    estimator: Any = None,
    reset: bool = False,
    spatial_dims: int = 2,
    planar: bool = False,
) -> Batch:
    """Normalise ``X`` (and ``mask``) into a :class:`Batch`.

    Accepted: an ndarray ``(N, H, W, C)``, ``(N, H, W)`` or ``(N, P)``; a list
    or tuple of ``(H, W)`` / ``(H, W, C)`` images of any sizes (PIL images and
    ``(C, H, W)`` tensors among them); a single ``PIL.Image``; a channels-first
    torch tensor ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``. Raises
    ``TypeError`` / ``ValueError`` naming ``name``, also for float images
    holding NaN or infinity.

    With ``estimator``, tabular input goes through scikit-learn's
    ``validate_data`` first (``n_features_in_``, ``feature_names_in_``,
    DataFrames, sparse refusal), with ``reset`` as in scikit-learn.

    ``spatial_dims=3`` reads volumes instead (:func:`volume_batch`). With
    ``planar``, tensors stay channels-first: their images are views of the
    tensor's planes (:func:`planes_of`), and :func:`allocate_output` gives
    outputs of that layout, which :func:`restore` hands back without a copy.
    """
    if spatial_dims == 3:
        return volume_batch(X, mask, name)
    if estimator is not None and is_tabular(X):
        from sklearn.utils.validation import validate_data

        try:
            X = validate_data(estimator, X, reset=reset, dtype=None, ensure_all_finite=True)
        except ValueError as exc:  # scikit-learn's words, with this library's for two cases
            if "inhomogeneous" in str(exc):
                raise ValueError(
                    f"{name} must hold feature rows of one length; got a ragged sequence"
                ) from None
            if "0 sample(s)" in str(exc) or "0 feature(s)" in str(exc):
                raise ValueError(f"{name} must not be empty: {exc}") from None
            raise
    restore_dtypes: list = [None]
    if _is_pil(X):
        img, meta = _from_pil(X, name)
        batch_images, kind = [img], "pil"
    elif is_tensor(X):
        batch_images, meta = _from_tensor(X, name, planar)
        kind, restore_dtypes = "tensor", [None] * len(batch_images)
    elif isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(
                f"{name} must hold at least one image; got an empty {type(X).__name__}"
            )
        batch_images, kind, meta = [], "list", {"container": type(X), "ndims": [], "pil": []}
        restore_dtypes = []
        for i, item in enumerate(X):
            if _is_pil(item):
                img, pil_meta = _from_pil(item, f"{name}[{i}]")
                meta["pil"].append(pil_meta)
                meta["ndims"].append(None)
                restore_dtypes.append(None)
            elif is_tensor(item):
                if item.ndim == 4:
                    raise ValueError(
                        f"{name}[{i}] must be one image, a tensor of shape (C, H, W) or "
                        f"(H, W); got shape {tuple(item.shape)}"
                    )
                (img,), tensor_meta = _from_tensor(item, f"{name}[{i}]", planar)
                meta["pil"].append(("tensor", tensor_meta["like"]))
                meta["ndims"].append(None)
                restore_dtypes.append(None)
            else:
                raw = as_array(item, f"{name}[{i}]")
                restore_dtypes.append(raw.dtype)
                arr = check_dtype(raw, f"{name}[{i}]")
                meta["pil"].append(None)
                meta["ndims"].append(arr.ndim)
                img = _as_hwc(arr, f"{name}[{i}]")
            batch_images.append(img)
    elif isinstance(X, np.ndarray) or hasattr(X, "__array__"):
        raw = as_array(X, name)
        restore_dtypes = [raw.dtype]
        arr = check_dtype(raw, name)
        if arr.size == 0:
            raise ValueError(f"{name} must not be empty; got shape {arr.shape}")
        meta = {}
        if arr.ndim == 4:
            if arr.shape[1] in (1, 3, 4) and arr.shape[3] > 4:
                warnings.warn(
                    f"{name} of shape {arr.shape} is read as (N, H, W, C): {arr.shape[0]} "
                    f"images of {arr.shape[1]}x{arr.shape[2]} pixels with {arr.shape[3]} "
                    f"channels; if it is channels-first (N, C, H, W), pass "
                    f"np.moveaxis(X, 1, -1)",
                    UserWarning,
                    stacklevel=3,
                )
            elif arr.shape[3] > 4:
                warnings.warn(
                    f"{name} of shape {arr.shape} is read as (N, H, W, C): {arr.shape[0]} "
                    f"images with {arr.shape[3]} channels; if it holds grey volumes "
                    f"(N, D, H, W), pass spatial_dims=3",
                    UserWarning,
                    stacklevel=3,
                )
            kind, batch_images = "array4", list(arr)
        elif arr.ndim == 3:
            if arr.shape[-1] in (3, 4) and arr.shape[1] > 4 * arr.shape[-1]:
                raise ValueError(
                    f"{name} of shape {arr.shape} looks like one colour image, but an array "
                    f"of shape (N, H, W) is N grey images: pass [image] or image[None] "
                    f"(for {arr.shape[0]} grey images of {arr.shape[1]}x{arr.shape[2]} "
                    f"pixels, pass them as a list)"
                )
            kind, batch_images = "array3", list(arr[..., None])
        elif arr.ndim == 2:
            kind, batch_images = "tabular", list(arr[:, None, :, None])
        else:
            raise ValueError(
                f"{name} must be an array of shape (N, H, W, C), (N, H, W) or (N, P), "
                f"a list of images or a PIL image; got an array of shape {arr.shape}. "
                f"Reshape your data: one image is X[None] or [image]; one feature "
                f"row is X.reshape(1, -1); volumes (N, D, H, W[, C]) need spatial_dims=3"
            )
    else:
        raise TypeError(
            f"{name} must be a numpy array, a list of images or a PIL image; "
            f"got {type(X).__name__}"
        )

    dtypes = {im.dtype for im in batch_images}
    if len(dtypes) > 1:
        raise TypeError(f"{name} must hold images of one dtype; got {sorted(map(str, dtypes))}")
    channels = {im.shape[2] for im in batch_images}
    if len(channels) > 1:
        raise ValueError(f"{name} must hold images with one channel count; got {sorted(channels)}")
    images = []
    for i, im in enumerate(batch_images):
        if im.shape[0] == 0 or im.shape[1] == 0:
            raise ValueError(f"{name} image {i} must not be empty; got shape {im.shape}")
        check_values(im, name)
        # (only tensors' images are channels-first views; arrays are made (H, W, C))
        from_tensor = kind == "tensor" or (kind == "list" and isinstance(meta["pil"][i], tuple))
        kept = planar and from_tensor and planes_of(im) is not None
        images.append(im if kept else np.ascontiguousarray(im))
    masks = _mask_list(mask, [im.shape[:2] for im in images], "mask")
    meta["float16"] = [d == np.float16 for d in restore_dtypes]
    return Batch(images, masks, kind, meta)


# ------------------------------------------------------------------------ volumes
#: the containers of volumes (``spatial_dims=3``) that :func:`restore` rebuilds
_VOLUME_ARRAYS = ("volumes4", "volumes5")


def _volume_of(item: Any, name: str) -> tuple[np.ndarray, Any]:
    """One volume as a ``(D, H, W, C)`` array, and the dtype (or tensor) to give back.

    Arrays are ``(D, H, W)`` or ``(D, H, W, C)``; tensors are channels-first
    ``(C, D, H, W)``.
    """
    if is_tensor(item):
        if item.ndim != 4:
            raise ValueError(
                f"{name} must be a channels-first volume tensor of shape (C, D, H, W); "
                f"got shape {tuple(item.shape)}"
            )
        t = item.detach().cpu()
        if t.dtype in (sys.modules["torch"].float16, sys.modules["torch"].bfloat16):
            t = t.float()
        try:
            arr = t.numpy()
        except TypeError as exc:
            raise TypeError(f"{name} must be a tensor of a supported dtype; got {exc}") from None
        return np.moveaxis(arr, 0, -1), item
    if _is_pil(item):
        raise TypeError(f"{name} must be a volume (an array); got a PIL image")
    raw = as_array(item, name)
    arr = check_dtype(raw, name)
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.ndim != 4:
        raise ValueError(
            f"{name} must be a volume of shape (D, H, W) or (D, H, W, C); got shape {arr.shape}"
        )
    return arr, raw.dtype


def volume_batch(X: Any, mask: Any, name: str = "X") -> Batch:
    """Normalise volumes (``spatial_dims=3``) and their masks into a :class:`Batch`.

    Accepted: an ndarray ``(N, D, H, W)`` (grey) or ``(N, D, H, W, C)``; a
    list or tuple of ``(D, H, W)`` / ``(D, H, W, C)`` volumes of any sizes
    (channels-first ``(C, D, H, W)`` tensors among them); a channels-first
    tensor ``(C, D, H, W)`` or ``(N, C, D, H, W)``. Masks are boolean, of each
    volume's ``(D, H, W)`` shape. Every volume is held as a ``(D * H, W, C)``
    array and its mask as ``(D * H, W)`` (:attr:`Batch.spatial_shapes`).

    Examples
    --------
    >>> import numpy as np
    >>> from histmatch_ml._images import volume_batch
    >>> batch = volume_batch(np.zeros((2, 4, 5, 6), dtype=np.uint8), None)
    >>> batch.images[0].shape, batch.spatial_shapes
    ((20, 6, 1), [(4, 5, 6), (4, 5, 6)])
    """
    meta: dict[str, Any] = {}
    if is_tensor(X):
        if X.ndim not in (4, 5):
            raise ValueError(
                f"{name} must be a channels-first volume tensor of shape (C, D, H, W) or "
                f"(N, C, D, H, W); got shape {tuple(X.shape)}"
            )
        items = list(X) if X.ndim == 5 else [X]
        kind, meta["like"] = "volume_tensor", X
    elif isinstance(X, (list, tuple)):
        if len(X) == 0:
            raise ValueError(
                f"{name} must hold at least one volume; got an empty {type(X).__name__}"
            )
        items, kind, meta["container"] = list(X), "volume_list", type(X)
    elif isinstance(X, np.ndarray) or hasattr(X, "__array__"):
        arr = as_array(X, name)
        if arr.ndim not in (4, 5):
            hint = " (one volume: pass volume[None] or [volume])" if arr.ndim == 3 else ""
            raise ValueError(
                f"{name} must be an array of volumes of shape (N, D, H, W) or "
                f"(N, D, H, W, C) with spatial_dims=3; got shape {arr.shape}{hint}"
            )
        items, kind = list(arr), f"volumes{arr.ndim}"
    else:
        raise TypeError(
            f"{name} must be a numpy array, a list of volumes or a tensor; got {type(X).__name__}"
        )
    images, spatial, give_back, ndims = [], [], [], []
    for i, item in enumerate(items):
        where = name if kind in _VOLUME_ARRAYS or len(items) == 1 else f"{name}[{i}]"
        vol, back = _volume_of(item, where)
        if vol.size == 0:
            raise ValueError(f"{where} must not be empty; got shape {vol.shape}")
        check_values(vol, where)
        vol = np.ascontiguousarray(vol)
        d, h, w, c = vol.shape
        images.append(vol.reshape(d * h, w, c))
        spatial.append((d, h, w))
        give_back.append(back)
        ndims.append(None if is_tensor(item) else np.ndim(item))
    if len({im.dtype for im in images}) > 1:
        dtypes = sorted({str(im.dtype) for im in images})
        raise TypeError(f"{name} must hold volumes of one dtype; got {dtypes}")
    if len({im.shape[2] for im in images}) > 1:
        counts = sorted({im.shape[2] for im in images})
        raise ValueError(f"{name} must hold volumes with one channel count; got {counts}")
    if isinstance(mask, np.ndarray) and mask.ndim == 4:
        mask = list(mask)
    masks = _mask_list(mask, spatial, "mask")
    if masks is not None:
        masks = [m.reshape(im.shape[:2]) for m, im in zip(masks, images)]
    meta["spatial"], meta["back"], meta["ndims"] = spatial, give_back, ndims
    meta["float16"] = [not is_tensor(b) and b == np.float16 for b in give_back]
    return Batch(images, masks, kind, meta)


def _restore_volumes(batch: Batch, outputs: list[np.ndarray] | np.ndarray) -> Any:
    """:func:`restore` for the containers of :func:`volume_batch`."""
    kind, meta = batch.kind, batch.meta
    if kind in _VOLUME_ARRAYS:
        full = outputs if isinstance(outputs, np.ndarray) else np.stack(outputs)
        full = full.reshape(len(full), *meta["spatial"][0], full.shape[-1])
        if meta["float16"][0]:
            full = full.astype(np.float16)
        return full[..., 0] if kind == "volumes4" else full
    result = []
    for i, (out, back) in enumerate(zip(outputs, meta["back"])):
        vol = batch.volume(i, out)
        if is_tensor(back):
            like = meta.get("like", back)
            tensor = sys.modules["torch"].from_numpy(np.ascontiguousarray(np.moveaxis(vol, -1, 0)))
            result.append(tensor.to(device=like.device, dtype=like.dtype))
        else:
            vol = vol.astype(np.float16) if meta["float16"][i] else vol
            result.append(vol[..., 0] if meta["ndims"][i] == 3 else vol)
    if kind == "volume_tensor":
        torch = sys.modules["torch"]
        return torch.stack(result) if meta["like"].ndim == 5 else result[0]
    return meta["container"](result)


#: pixels gathered per chunk when a stream of images is learned from (memory: one chunk)
STREAM_CHUNK_PIXELS = 2**24


def is_stream(X: Any) -> bool:
    """True for inputs that are read one image at a time: iterators, generators, other
    iterables that are not arrays, and file paths (one, or a list or tuple of them)."""
    if isinstance(X, (str, os.PathLike)):
        return True
    if isinstance(X, (list, tuple)):
        return any(isinstance(item, (str, os.PathLike)) for item in X)
    if isinstance(X, (np.ndarray, dict)) or _is_pil(X) or is_tensor(X):
        return False
    if hasattr(X, "__array__") or hasattr(X, "shape") or hasattr(X, "iloc"):
        return False  # array-likes (DataFrames, sparse matrices) go through to_batch
    return hasattr(X, "__iter__")


def _read_pixels(path: str | os.PathLike) -> Any:
    """:func:`read_file`'s read, its errors as the readers raise them."""
    from .io import read_image
    from .io._volume_files import is_volume_file, read_volume

    if is_volume_file(path):
        return read_volume(path).data
    pixels = read_image(path).pixels
    if isinstance(pixels, np.ndarray) and pixels.ndim == 3 and pixels.shape[2] == 4:
        pixels = np.ascontiguousarray(pixels[:, :, :3])
    return pixels


def read_file(path: str | os.PathLike, name: str, pending: Future | None = None) -> Any:
    """An image file read as the command line reads it (modes, bit depths), for matching.

    Returns a PIL image, or an ``(H, W, 3)`` uint16 array for 16-bit colour
    files (their alpha, if any, left out); NIfTI volumes come as arrays
    (:func:`histmatch_ml.io.read_volume`). ``pending``: the same read already
    started in a thread (its result is taken). Errors name the file.
    """
    try:
        return _read_pixels(path) if pending is None else pending.result()
    except (OSError, ValueError) as exc:
        raise ValueError(f"{name}: cannot read {os.fspath(path)!r}: {exc}") from None


def read_ahead(items: Any, n_threads: int, read: Callable[[Any], Any] = _read_pixels) -> Any:
    """``(item, pending)`` pairs in ``items``' order, where ``pending`` is the
    ``read(item)`` of a path item started in one of ``n_threads`` threads, up
    to ``n_threads`` items ahead (decompression and decoding release the GIL),
    and None for other items and with one thread. Stopped early, the reads not
    yet begun are dropped."""
    if n_threads <= 1:
        for item in items:
            yield item, None
        return
    queue: deque = deque()
    with ThreadPoolExecutor(n_threads) as pool:
        try:
            for item in items:
                is_path = isinstance(item, (str, os.PathLike))
                if not is_path and not queue:  # (in memory already: not held back)
                    yield item, None
                    continue
                queue.append((item, pool.submit(read, item) if is_path else None))
                if len(queue) > n_threads:
                    yield queue.popleft()
            while queue:
                yield queue.popleft()
        finally:
            for _, pending in queue:
                if pending is not None:
                    pending.cancel()


def stream_chunks(
    X: Any,
    mask: Any,
    name: str,
    max_pixels: int = STREAM_CHUNK_PIXELS,
    spatial_dims: int = 2,
    n_threads: int = 1,
) -> Any:
    """Yield ``(images, masks)`` lists of at most about ``max_pixels`` pixels from a stream.

    Items are images (arrays, PIL images, tensors), ``(N, H, W[, C])`` arrays
    (their images), or file paths (read by :func:`read_file`). ``mask`` is
    None or an iterable of one mask per image, in the same order. Only one
    chunk is held at a time. With ``spatial_dims=3`` items are volumes (and
    ``(N, D, H, W, C)`` arrays of them), and volume files are read as volumes.
    ``n_threads`` above 1 reads files that many at a time, in threads, ahead
    of the chunk being gathered.
    """
    from .io._volume_files import is_volume_file as item_is_volume

    batched = 5 if spatial_dims == 3 else 4
    items = iter([X] if isinstance(X, (str, os.PathLike)) else X)
    masks = None if mask is None else iter(mask)
    images: list = []
    chunk_masks: list = []
    pixels = 0
    count = 0
    for item, pending in read_ahead(items, n_threads):
        if isinstance(item, (str, os.PathLike)):
            if spatial_dims != 3 and item_is_volume(item):
                raise ValueError(
                    f"{name}[{count}]: {os.fspath(item)!r} is a volume file; pass spatial_dims=3"
                )
            parts = [read_file(item, f"{name}[{count}]", pending)]
        elif isinstance(item, np.ndarray) and item.ndim == batched:
            parts = list(item)
        else:
            parts = [item]
        for image in parts:
            if masks is not None:
                m = next(masks, None)
                if m is None:
                    raise ValueError(f"mask must hold one mask per image; it ran out at {count}")
                chunk_masks.append(m)
            size = image.size if _is_pil(image) else np.shape(image)
            if spatial_dims == 3:
                size = size[-3:] if is_tensor(image) else size[:3]
            else:
                size = size[-2:] if is_tensor(image) else size[:2]
            pixels += int(np.prod(size))
            images.append(image)
            count += 1
            if pixels >= max_pixels:
                yield images, (chunk_masks if masks is not None else None)
                images, chunk_masks, pixels = [], [], 0
    if images:
        yield images, (chunk_masks if masks is not None else None)
    elif count == 0:
        raise ValueError(f"{name} must hold at least one image; got an empty iterable")


def allocate_output(batch: Batch) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """Preallocate the output of a batch.

    Returns ``(full, views)``: ``views[i]`` is a writable ``(H, W, C)`` array
    for image ``i``. For ndarray batches they are views into ``full``, the
    array :func:`restore` returns, so transforming a batch needs no second
    full-size copy (channels-first tensor batches: ``full`` is ``(N, C, H, W)``
    and the views are its planes transposed); lists and PIL images give
    ``full=None`` and one array per image.
    """
    if batch.kind == "tensor" and planes_of(batch.images[0]) is not None:  # channels-first
        h, w, c = batch.images[0].shape
        full = np.empty((len(batch.images), c, h, w), dtype=batch.dtype)
        return full, [planes.transpose(1, 2, 0) for planes in full]
    if batch.kind not in ("array4", "array3", "tabular", *_VOLUME_ARRAYS):
        # (empty_like keeps a channels-first view's layout)
        return None, [np.empty_like(im) for im in batch.images]
    full = np.empty((len(batch.images), *batch.images[0].shape), dtype=batch.dtype)
    return full, list(full)


def restore(batch: Batch, outputs: list[np.ndarray] | np.ndarray) -> Any:
    """Put processed ``(H, W, C)`` arrays back into the caller's container.

    ``outputs`` is a list of arrays, or for ndarray batches the ``full`` array
    of :func:`allocate_output`.
    """
    kind, meta = batch.kind, batch.meta
    if "spatial" in meta:
        return _restore_volumes(batch, outputs)
    if kind in ("array4", "array3", "tabular"):
        full = outputs if isinstance(outputs, np.ndarray) else np.stack(outputs)
        if meta["float16"][0]:
            full = full.astype(np.float16)
        if kind == "array3":
            return full[..., 0]
        if kind == "tabular":
            return full.reshape(full.shape[0], -1)
        return full
    if kind == "pil":
        return _to_pil(outputs[0], meta)
    if kind == "tensor":
        if isinstance(outputs, np.ndarray):  # channels-first (N, C, H, W) already
            return _planes_to_tensor(outputs, meta["like"])
        return _to_tensor(list(outputs), meta["like"])
    result = []
    for out, ndim, pil_meta, half in zip(outputs, meta["ndims"], meta["pil"], meta["float16"]):
        if isinstance(pil_meta, tuple):  # a tensor of a list
            result.append(_to_tensor([out], pil_meta[1]))
        elif pil_meta is not None:
            result.append(_to_pil(out, pil_meta))
        else:
            out = out.astype(np.float16) if half else out
            result.append(out[:, :, 0] if ndim == 2 else out)
    return meta["container"](result)


# ------------------------------------------------------------------- channel layout
#: dtypes OpenCV's copies (cv2.mixChannels, cv2.merge, cv2.copyTo) handle in every version
CV_DTYPES = tuple(
    map(np.dtype, ("uint8", "int8", "uint16", "int16", "int32", "float32", "float64"))
)


def _cv_ready(image: np.ndarray) -> bool:
    return 1 < image.shape[2] <= 4 and image.dtype in CV_DTYPES and image.flags.c_contiguous


def split_into(image: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Copy the channels of ``image`` ``(H, W, C)`` into contiguous ``planes`` ``(C, H, W)``.

    ``cv2.mixChannels`` when the dtypes agree (OpenCV's copy beats numpy's
    strided one), a casting copy otherwise.
    """
    n = image.shape[2]
    if image.dtype == planes.dtype and _cv_ready(image):
        pairs = [i for c in range(n) for i in (c, c)]
        first = cv2.mixChannels([image], list(planes), pairs)[0]
        if np.shares_memory(first, planes):
            return planes
    np.copyto(planes, image.transpose(2, 0, 1), casting="unsafe")
    return planes


def channel_into(image: np.ndarray, channel: int, plane: np.ndarray) -> np.ndarray:
    """Copy one channel of ``image`` ``(H, W, C)`` into the contiguous ``plane`` ``(H, W)``.

    ``cv2.mixChannels`` when the dtypes agree, a casting copy otherwise.
    """
    if image.dtype == plane.dtype and _cv_ready(image):
        first = cv2.mixChannels([image], [plane], [channel, 0])[0]
        if np.shares_memory(first, plane):
            return plane
    np.copyto(plane, image[:, :, channel], casting="unsafe")
    return plane


def channel_from(plane: np.ndarray, out: np.ndarray, channel: int) -> np.ndarray:
    """Write the contiguous ``plane`` ``(H, W)`` as channel ``channel`` of ``out`` (H, W, C)."""
    if plane.dtype == out.dtype and _cv_ready(out):
        first = cv2.mixChannels([plane], [out], [0, channel])[0]
        if np.shares_memory(first, out):
            return out
    out[:, :, channel] = plane
    return out


def interleave_into(planes: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write contiguous planes ``(C, H, W)`` as the channels of ``out`` ``(H, W, C)``.

    ``cv2.merge`` where OpenCV takes the dtype, a strided copy otherwise.
    """
    if not (_cv_ready(out) and cv2.merge(list(planes), dst=out) is out):
        out[...] = planes.transpose(1, 2, 0)
    return out


def wrap_single(image: Any, name: str = "image") -> tuple[Any, Callable[[Any], Any]]:
    """One image (``(H, W)``/``(H, W, C)`` ndarray or PIL) as a one-image batch.

    Returns the batch to hand to the estimator and a function that unwraps the
    estimator's output back into one image of the caller's type. The image's
    dtype and shape are checked here, so errors name ``name``.
    """
    if _is_pil(image) or is_tensor(image):
        if is_tensor(image) and image.ndim == 4:
            raise ValueError(
                f"{name} must be one image, a tensor of shape (C, H, W) or (H, W); got "
                f"shape {tuple(image.shape)}"
            )
        return image, lambda out: out
    arr = as_array(image, name)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"{name} must be one image of shape (H, W) or (H, W, C); got shape {arr.shape}"
        )
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] > 4:
        raise ValueError(
            f"{name} of shape {arr.shape} looks channels-first (C, H, W); images are "
            f"(H, W, C) arrays: pass np.moveaxis({name}, 0, -1)"
        )
    _as_hwc(check_dtype(arr, name), name)
    return [arr], lambda out: out[0]


def _from_pil(img: Any, name: str) -> tuple[np.ndarray, dict]:
    """The colour channels of a PIL image (upright, its mode converted as the CLI does).

    The conversion table is :func:`histmatch_ml.io._image_files.normalise_pil`'s;
    alpha, ICC profile, resolution and the rest of the EXIF are kept for the
    output. Mode ``I`` holding values in 0..65535 is matched as uint16 (exact
    histograms), otherwise as int32.
    """
    from .io._image_files import PORTABLE_METADATA, normalise_pil

    try:
        img = normalise_pil(img)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    mode = img.mode
    dtype, n_colour, has_alpha = _PIL_MODES[mode]
    arr = np.asarray(img)
    if mode == "I" and arr.size and (arr.min() < 0 or arr.max() > 65535):
        dtype = np.int32
    arr = arr.astype(dtype, copy=False)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    alpha = arr[:, :, n_colour:].copy() if has_alpha else None
    colour = np.ascontiguousarray(arr[:, :, :n_colour])
    info = {k: img.info[k] for k in PORTABLE_METADATA if img.info.get(k)}
    return _as_hwc(colour, name), {"mode": mode, "alpha": alpha, "info": info}


def _to_pil(arr: np.ndarray, meta: dict) -> Any:
    from PIL import Image

    mode = meta["mode"]
    if meta["alpha"] is not None:
        arr = np.concatenate([arr, meta["alpha"]], axis=2)
    if arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if mode == "I":
        out = Image.fromarray(arr.astype(np.int32), mode="I")
    elif mode == "I;16":
        out = Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint16))
        if out.mode != "I;16":  # older Pillow: build it from bytes
            out = Image.frombytes("I;16", out.size, arr.astype("<u2").tobytes())
    else:
        out = Image.fromarray(np.ascontiguousarray(arr))
        if out.mode != mode:
            out = out.convert(mode)
    out.info.update(meta["info"])  # (ICC profile, resolution, EXIF without orientation)
    return out
