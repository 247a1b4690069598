"""Running the per-file work: one image read, matched and written, over a process pool.

The same helpers match the single images of ``fit`` and ``match`` in the main
process; ``transform`` runs :func:`_transform_one` over its tasks in worker
processes that each load the model once.

What happens when a run is cut short:

* The first ``SIGINT`` (Ctrl-C) asks the run to stop: nothing more is started,
  the files in progress are finished (worker processes ignore ``SIGINT``, so
  none is cut mid-write), and the command reports how many were written and
  exits with status 130. A second ``SIGINT`` ends the process at once.
* Worker processes end themselves when the main process is gone (killed with
  ``SIGKILL``, say) instead of waiting forever for work: on Linux the kernel
  sends them ``SIGKILL`` when their parent ends (``PR_SET_PDEATHSIG``), and
  on every system a thread in each worker checks that its parent is still the
  same process, and, for the workers of a fork server (whose parent is the
  server, which outlives the main process while its workers hold it open),
  that the main process is still running.
* The first "no space left on device" (or "disk quota exceeded") error stops
  the run like ``--fail-fast``: every later file would fail the same way.
  Once the run stops, for any reason, the workers skip the files they have
  been handed but not begun.
* A process killed while writing leaves only a temporary file
  ``.histmatch-tmp-<pid>-<random>`` (see :mod:`histmatch_ml.io._atomic`),
  which the next run removes before it starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

#: errors after which no later file can be written either: the run stops at the first
DISK_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)
#: how often (seconds) a worker checks that its parent process is still there
_PARENT_CHECK_INTERVAL = 0.5
#: longest wait (seconds) for a result before the main loop looks for an interrupt again
_INTERRUPT_CHECK_INTERVAL = 0.1


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


#: the library's channel-mismatch error, whose advice is for Python code
_CHANNEL_FIX = re.compile(r"^\S+ must have (\d+) channel\(s\), as the references; got (\d+):.*$")
#: the ``--mode`` that gives an image the channels of the references
_MODE_FOR = {"1": "L", "3": "RGB", "4": "RGBA"}


def _channel_fix(match: re.Match) -> str:
    expected, got = match.groups()
    mode = _MODE_FOR.get(expected)
    fix = f"; pass --mode {mode} to convert on read" if mode else ""
    return f"has {got} channel(s), the references {expected}{fix}"


def _describe(exc: BaseException, path: Path) -> str:
    """One line for the error of ``path``: its name not repeated, advice for a shell."""
    msg = str(exc) or type(exc).__name__
    for prefix in (f"{path}: ", f"{os.fspath(path)!r}: "):
        msg = msg.removeprefix(prefix)
    msg = _CHANNEL_FIX.sub(_channel_fix, msg)
    return " ".join(msg.split())


@contextlib.contextmanager
def _recording() -> Iterator[list[str]]:
    """Record the warnings raised inside; yield the list of their messages (one line each).

    The command prints them as ``warning: <file>: <message>`` lines instead of
    Python's default, which names no file and shows a line of source.
    """
    messages: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield messages
        finally:
            for w in caught:
                line = " ".join(str(w.message).split())
                if line not in messages:
                    messages.append(line)


def _disk_full_errno(exc: BaseException) -> int | None:
    """``ENOSPC`` or ``EDQUOT`` if ``exc``, or an exception it was raised from, is one."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current.errno
        current = current.__cause__ or current.__context__
    return None


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: worker processes may be forked
    return tqdm(total=total, desc=desc, unit="img", disable=not sys.stderr.isatty())


def _report(bar: Any, path: Path, message: str) -> None:
    bar.write(f"error: {path}: {message}", file=sys.stderr)


def _warn(bar: Any, path: Path, messages: list[str] | tuple[str, ...]) -> None:
    """Print ``warning: <path>: <message>`` lines, above the progress ``bar`` if any."""
    for message in messages:
        line = f"warning: {path}: {message}"
        if bar is None:
            print(line, file=sys.stderr)
        else:
            bar.write(line, file=sys.stderr)


# ------------------------------------------------------------- worker processes
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


def _start_worker(
    main_pid: int, via_server: bool, stop: Any, init: Callable[..., None], initargs: tuple
) -> None:
    """Initializer of a pool worker: ignore ``SIGINT``, watch the parent, then ``init``.

    Parameters
    ----------
    main_pid : int
        The pid of the main process.
    via_server : bool
        Whether a fork server started the worker (its parent is then the
        server); otherwise the main process did, and is its parent.
    stop : multiprocessing.Event
        Set when the run stops: the worker then skips its remaining files.
        It sets it itself when the disk is full.
    init : callable
        The initializer proper, called with ``initargs``.
    initargs : tuple
        Its arguments.
    """
    # the main process decides when to stop on Ctrl-C; a worker cut short by it would print
    # a traceback and could leave its output half-done
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_main(main_pid, via_server)
    _WORKER["stop"] = stop
    init(*initargs)


def _set_parent_death_signal() -> None:
    """Ask Linux to send this process ``SIGKILL`` when its parent ends."""
    import ctypes

    pr_set_pdeathsig = 1  # from <linux/prctl.h>
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def _watch_main(main_pid: int, via_server: bool) -> None:
    """End this worker as soon as the main process is gone: nothing else would end it."""
    from ..io._atomic import process_running

    parent = os.getppid()
    if not via_server and parent != main_pid:
        os._exit(1)  # orphaned before this ran
    if sys.platform.startswith("linux"):
        _set_parent_death_signal()

    def gone() -> bool:
        # an orphan is adopted by another process, so its parent pid changes
        return os.getppid() != parent or (via_server and not process_running(main_pid))

    if gone():
        os._exit(1)  # ended before the kernel was asked to tell

    def check() -> None:
        while not gone():
            time.sleep(_PARENT_CHECK_INTERVAL)
        os._exit(1)

    threading.Thread(target=check, name="histmatch-parent-watch", daemon=True).start()


def _outside(directory: Path, out_dir: Path, out_real: str) -> tuple[Path, str] | None:
    """The first directory from ``out_dir`` down to ``directory`` that resolves outside
    ``out_real`` (the resolved output directory), and where it leads; None if none does."""

    def inside(real: str) -> bool:
        try:
            return os.path.commonpath([real, out_real]) == out_real
        except ValueError:  # different drives
            return False

    current = out_dir
    for part in directory.relative_to(out_dir).parts:
        current = current / part
        real = os.path.realpath(current)
        if not inside(real):
            return current, real
    return None


class _Result(NamedTuple):
    """What became of one file: written (``error`` None), failed, or skipped."""

    src: str
    #: the message for the error line; None if written or skipped
    error: str | None = None
    #: ``ENOSPC`` or ``EDQUOT`` when the failure says the output's file system is full
    disk_full: int | None = None
    #: not tried: the run had stopped when the worker came to it
    skipped: bool = False
    #: the warnings the file raised, one line each
    warnings: tuple[str, ...] = ()


def _transform_one(task: tuple[str, str, str | None]) -> _Result:
    """Read, match and write one file, unless the run has stopped."""
    src = Path(task[0])
    options = _WORKER["options"]
    stop = _WORKER.get("stop")
    if stop is not None and stop.is_set():
        return _Result(str(src), skipped=True)
    with _recording() as caught:
        result = _transform_file(task, options, stop)
    return result._replace(warnings=tuple(caught)) if caught else result


def _transform_file(task: tuple[str, str, str | None], options: dict[str, Any], stop: Any):
    """The work of :func:`_transform_one`, its errors turned into a :class:`_Result`."""
    from ..io import read_image, read_mask, write_image
    from ..io._volume_files import is_volume_file

    src, dst, mask_path = (Path(task[0]), Path(task[1]), task[2])
    try:
        # a symbolic link in the output tree must not carry the output (and the
        # directories made for it) to somewhere outside the output directory
        escape = _outside(dst.parent, Path(options["out_dir"]), options["out_real"])
        if escape is not None:
            message = (
                f"refusing to write {dst}: {escape[0]} is a link to {escape[1]}, outside the "
                f"output directory {options['out_dir']}"
            )
            return _Result(str(src), message)
        if is_volume_file(src):
            transform_volume_file(_WORKER["matcher"], src, dst, mask_path, options["overwrite"])
            return _Result(str(src))
        data = read_image(src, max_pixels=options["max_pixels"], mode=options.get("mode"))
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
        full = _disk_full_errno(exc)
        if full is None:
            return _Result(str(src), _describe(exc, src))
        if stop is not None:
            stop.set()  # the other workers need not try to write more
        return _Result(str(src), f"cannot write {dst}: {_describe(exc, dst)}", full)
    return _Result(str(src))


def transform_volume_file(
    matcher: Any, src: Path, dst: Path, mask_path: str | None, overwrite: bool
) -> None:
    """Match one NIfTI volume file into ``dst``, with its affine, header and dtype.

    The volume is matched as a volume whatever ``spatial_dims`` the model was
    fitted with (a copy of the matcher reads it so); its mask, if any, is a
    volume file of its shape (non-zero voxels).
    """
    import copy

    from ..io import read_volume, read_volume_mask, write_volume

    volume = read_volume(src)
    mask = None if mask_path is None else [read_volume_mask(mask_path, volume.data.shape[:3])]
    as_volumes = copy.copy(matcher).set_params(spatial_dims=3)
    out = as_volumes.transform([volume.data], mask=mask)[0]
    dst.parent.mkdir(parents=True, exist_ok=True)
    write_volume(dst, out, volume, overwrite=overwrite)


def _write_options(fmt: str, save_options: dict[str, Any], png_level: int) -> dict[str, Any]:
    """The source file's save options, plus the PNG compression level chosen."""
    return {**save_options, "compress_level": png_level} if fmt == "PNG" else save_options


def _pool_context():
    """``fork`` on Linux when no other thread runs (workers start at once, nothing to
    re-import), else ``forkserver`` with this module preloaded, else ``spawn``."""
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])
        return ctx
    return multiprocessing.get_context("spawn")


# ------------------------------------------------------------------ the run loop
@dataclass
class _Outcome:
    """How a run of :func:`_run_tasks` went.

    Attributes
    ----------
    done, failed : int
        Files written, and files that failed.
    failed_paths : list of str
        The files that failed, in the order they were reported.
    stopped : str or None
        Why the run stopped before the last task (``"--fail-fast"``,
        ``"interrupted"``, ``"stopped: no space left on device"``), else None.
    interrupted : bool
        Stopped by ``SIGINT``.
    """

    done: int = 0
    failed: int = 0
    failed_paths: list[str] = field(default_factory=list)
    stopped: str | None = None
    interrupted: bool = False


@contextlib.contextmanager
def _deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Turn the first ``SIGINT`` into a request to stop; yield a function that tells.

    The first ``SIGINT`` only sets a flag, so the loop stops at a point of its
    choosing (no ``KeyboardInterrupt`` between a submission and its
    bookkeeping). A second one restores the default action and ends the
    process at once: the workers then end too, and the temporary files of the
    writes in progress are removed by the next run. Outside the main thread,
    where no handler can be set, ``SIGINT`` keeps its usual effect.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    requests = []

    def handler(signum: int, frame: Any) -> None:
        requests.append(signum)
        if len(requests) > 1:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requests)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_tasks(
    tasks: list[tuple[str, str, str | None]],
    jobs: int,
    init: Callable[..., None],
    initargs: tuple,
    *,
    fail_fast: bool,
    desc: str,
    executor: Any = None,
    stop: Any = None,
) -> _Outcome:
    """Run ``_transform_one`` over ``tasks``; report errors; say how it went.

    Stops at the first error with ``fail_fast``, at the first "no space left
    on device" error, and on ``SIGINT``: the files being processed are
    finished and counted, the others are not begun.

    With ``executor`` (a ``concurrent.futures`` executor whose workers the
    caller has set up with ``init``, such as a dask cluster's) the tasks go
    there, ``jobs`` at a time (times 4), and ``stop`` (an event its workers
    read) tells them to skip the files not begun; otherwise a pool of
    ``jobs`` worker processes is started.
    """
    outcome = _Outcome()
    with _progress(len(tasks), desc) as bar, _deferred_interrupt() as interrupted:

        def finish(result: _Result) -> None:
            bar.update(1)
            if result.skipped:
                return
            _warn(bar, Path(result.src), result.warnings)
            if result.error is None:
                outcome.done += 1
                return
            outcome.failed += 1
            outcome.failed_paths.append(result.src)
            _report(bar, Path(result.src), result.error)
            if outcome.stopped is None and result.disk_full is not None:
                outcome.stopped = f"stopped: {os.strerror(result.disk_full).lower()}"
            elif outcome.stopped is None and fail_fast:
                outcome.stopped = "--fail-fast"

        def stopping() -> bool:
            if outcome.stopped is None and interrupted():
                outcome.stopped, outcome.interrupted = "interrupted", True
                bar.write(
                    f"histmatch {desc}: interrupted; finishing the files in progress "
                    "(interrupt again to stop at once; --skip-existing resumes the run)",
                    file=sys.stderr,
                )
            return outcome.stopped is not None

        if jobs == 1 and executor is None:
            _WORKER.pop("stop", None)
            init(*initargs)
            for task in tasks:
                if stopping():
                    break
                finish(_transform_one(task))
            stopping()
            return outcome
        if executor is not None:
            _submit_all(executor, stop, tasks, jobs, finish, stopping, cancel=False)
            stopping()
            return outcome
        ctx = _pool_context()
        via_server = ctx.get_start_method() == "forkserver"
        stop = ctx.Event()
        with ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(os.getpid(), via_server, stop, init, initargs),
        ) as pool:
            _submit_all(pool, stop, tasks, jobs, finish, stopping, cancel=True)
        stopping()
    return outcome


def _submit_all(
    pool: Any,
    stop: Any,
    tasks: list,
    jobs: int,
    finish: Callable[[_Result], None],
    stopping: Callable[[], bool],
    *,
    cancel: bool,
) -> None:
    """Hand ``tasks`` to ``pool``, at most ``4 * jobs`` at a time, until done or stopping.

    ``cancel``: queued futures can be cancelled without touching running ones
    (a process pool's; a dask cluster's cancel running tasks too, so there the
    workers skip them through ``stop`` instead).
    """
    pending: set = set()
    queue = iter(tasks)
    while True:
        if stopping():
            stop.set()  # the files handed to the workers but not begun are skipped
            if cancel:
                for future in pending:
                    future.cancel()  # only the queued ones: those running are finished
                pending = {future for future in pending if not future.cancelled()}
        else:
            while len(pending) < 4 * jobs:
                task = next(queue, None)
                if task is None:
                    break
                pending.add(pool.submit(_transform_one, task))
        if not pending:
            break
        finished, pending = wait(
            pending, timeout=_INTERRUPT_CHECK_INTERVAL, return_when=FIRST_COMPLETED
        )
        for future in finished:
            finish(future.result())


def _default_jobs() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
