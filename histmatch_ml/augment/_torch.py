"""torch tensors in and out of the augmenter, and DataLoader worker identity.

torch is never imported here unless the caller already holds a tensor: a
DataLoader worker has always imported torch, so a process that has not
cannot be one.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from .._images import interleave_into, split_into


def worker_key() -> tuple[int, int] | None:
    """``(id, seed)`` of the current ``torch.utils.data`` worker, or None outside one."""
    data = sys.modules.get("torch.utils.data")
    info = None if data is None else data.get_worker_info()
    return None if info is None else (int(info.id), int(info.seed))


def is_tensor(obj: Any) -> bool:
    """True for a ``torch.Tensor`` (without importing torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _chw_to_hwc(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous ``(H, W, C)`` copy (or view, for one channel) of a ``(C, H, W)`` array."""
    if arr.shape[0] == 1:
        return arr.reshape(*arr.shape[1:], 1)
    out = np.empty((*arr.shape[1:], arr.shape[0]), dtype=arr.dtype)
    return interleave_into(np.ascontiguousarray(arr), out)


def tensor_to_hwc(tensor: Any, name: str) -> list[np.ndarray]:
    """Images ``(H, W, C)`` of a ``(C, H, W)`` / ``(N, C, H, W)`` (or ``(H, W)``) tensor.

    The tensor is only read, never written.
    """
    import torch

    if tensor.ndim not in (2, 3, 4):
        raise ValueError(
            f"{name} must be a tensor of shape (C, H, W) or (N, C, H, W); "
            f"got shape {tuple(tensor.shape)}"
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
        return [arr[:, :, None]]
    if arr.ndim == 3:
        return [_chw_to_hwc(arr)]
    return [_chw_to_hwc(a) for a in arr]


def hwc_to_tensor(images: list[np.ndarray], like: Any) -> Any:
    """``(H, W, C)`` arrays as a tensor of the layout, dtype and device of ``like``."""
    import torch

    h, w, c = images[0].shape
    full = np.empty((len(images), c, h, w), dtype=images[0].dtype)
    for image, out in zip(images, full):
        split_into(image, out)
    result = torch.from_numpy(
        full if like.ndim == 4 else full[0] if like.ndim == 3 else full[0, 0]
    )
    return result.to(device=like.device, dtype=like.dtype)


def as_images(X: Any, name: str) -> Any:
    """Turn torch tensors (one, a batch or a list of them) into numpy images."""
    if is_tensor(X):
        return tensor_to_hwc(X, name)
    if isinstance(X, (list, tuple)) and any(is_tensor(x) for x in X):
        return [
            im
            for i, x in enumerate(X)
            for im in (tensor_to_hwc(x, f"{name}[{i}]") if is_tensor(x) else [x])
        ]
    return X
