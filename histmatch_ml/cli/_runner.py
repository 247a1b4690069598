"""Running the per-file work: one image read, matched and written, over a process pool.

The same helpers match the single images of ``fit`` and ``match`` in the main
process; ``transform`` runs :func:`_transform_one` over its tasks in worker
processes that each load the model once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np


def _colour(pixels: Any) -> Any:
    """What the matcher sees: a PIL image as is, a 16-bit colour array without alpha."""
    if isinstance(pixels, np.ndarray):
        return np.ascontiguousarray(pixels[:, :, :3])
    return pixels


def _apply(matcher: Any, pixels: Any, mask: np.ndarray | None) -> Any:
    """Match one image read by :func:`histmatch_ml.io.read_image` (alpha kept)."""
    if isinstance(pixels, np.ndarray):
        out = matcher.transform([_colour(pixels)], mask=None if mask is None else [mask])[0]
        if pixels.shape[2] == 4:
            out = np.concatenate([out, pixels[:, :, 3:]], axis=2)
        return out
    return matcher.transform(pixels, mask=mask)


def _describe(exc: BaseException, path: Path) -> str:
    msg = str(exc) or type(exc).__name__
    for prefix in (f"{path}: ", f"{os.fspath(path)!r}: "):
        msg = msg.removeprefix(prefix)
    return msg


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: worker processes may be forked
    return tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty())


def _report(bar: Any, path: Path, message: str) -> None:
    bar.write(f"error: {path}: {message}", file=sys.stderr)


_WORKER: dict[str, Any] = {}


def _init_worker(model_path: str, digest: str, options: dict[str, Any]) -> None:
    """Load the model once per worker process, and check it is the one planned."""
    from ..io import fingerprint, load_model

    matcher = load_model(model_path)
    if fingerprint(matcher) != digest:
        raise RuntimeError(f"the model file {model_path} changed while running")
    if options.get("strength") is not None:
        matcher.set_params(strength=options["strength"])
    if options.get("threads") is not None:
        import cv2

        cv2.setNumThreads(options["threads"])
    _WORKER.update(matcher=matcher, options=options)


def _transform_one(task: tuple[str, str, str | None]) -> tuple[str, str | None]:
    """Read, match and write one file; return ``(input, error message or None)``."""
    from ..io import read_image, read_mask, write_image

    src, dst, mask_path = (Path(task[0]), Path(task[1]), task[2])
    options = _WORKER["options"]
    try:
        data = read_image(src, max_pixels=options["max_pixels"])
        mask = None
        if mask_path is not None:
            mask = read_mask(mask_path, data.size, max_pixels=options["max_pixels"])
        out = _apply(_WORKER["matcher"], data.pixels, mask)
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_image(
            out,
            dst,
            format=data.format,
            save_options=_write_options(data.format, data.save_options, options["png_level"]),
            overwrite=options["overwrite"],
        )
    except Exception as exc:  # one bad file must not stop the others
        return str(src), _describe(exc, src)
    return str(src), None


def _write_options(fmt: str, save_options: dict[str, Any], png_level: int) -> dict[str, Any]:
    """The source file's save options, plus the PNG compression level chosen."""
    return {**save_options, "compress_level": png_level} if fmt == "PNG" else save_options


def _pool_context():
    """``fork`` on Linux when no other thread runs (workers start at once, nothing to
    re-import), else ``forkserver`` with this module preloaded, else ``spawn``."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_tasks(
    tasks: list[tuple[str, str, str | None]],
    jobs: int,
    init: Callable[..., None],
    initargs: tuple,
    *,
    fail_fast: bool,
    desc: str,
) -> tuple[int, int]:
    """Run ``_transform_one`` over ``tasks``; report errors; return (done, failed)."""
    done = failed = 0
    with _progress(len(tasks), desc) as bar:

        def finish(result: tuple[str, str | None]) -> bool:
            nonlocal done, failed
            src, error = result
            bar.update(1)
            if error is None:
                done += 1
                return True
            failed += 1
            _report(bar, Path(src), error)
            return not fail_fast

        if jobs == 1:
            init(*initargs)
            for task in tasks:
                if not finish(_transform_one(task)):
                    break
            return done, failed
        with ProcessPoolExecutor(
            max_workers=jobs, mp_context=_pool_context(), initializer=init, initargs=initargs
        ) as pool:
            pending: set = set()
            queue = iter(tasks)
            stop = False
            while True:
                while not stop and len(pending) < 4 * jobs:
                    task = next(queue, None)
                    if task is None:
                        break
                    pending.add(pool.submit(_transform_one, task))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    if not finish(future.result()):
                        stop = True
    return done, failed


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
