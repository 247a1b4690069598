"""DataLoader worker identity, for the augmenter's per-worker random streams.

torch is never imported here: a DataLoader worker has always imported torch,
so a process that has not cannot be one. (Tensor batches are matched on their
device by :mod:`histmatch_ml.backends.torch`, and converted by
:mod:`histmatch_ml._images` for the methods without a torch kernel.)
"""

from __future__ import annotations

import sys


def worker_key() -> tuple[int, int] | None:
    """``(id, seed)`` of the current ``torch.utils.data`` worker, or None outside one."""
    data = sys.modules.get("torch.utils.data")
    info = None if data is None else data.get_worker_info()
    return None if info is None else (int(info.id), int(info.seed))
