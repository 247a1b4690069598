"""Running the per-file work on a dask cluster: ``--scheduler ADDRESS|local|local:N``.

``transform`` hands the same tasks to the cluster's workers as to the process
pool (:func:`histmatch_ml.cli._runner._run_tasks` with the cluster's
executor): every worker loads the model once and checks its fingerprint (a
worker plugin), then reads, matches and writes its files atomically; the
summary, the error lines and the exit status are the process pool's. The
first ``SIGINT`` stops the run the same way: a ``distributed.Event`` tells the
workers to skip the files they have not begun.

``fit`` reads and checks every reference on the workers (the client gets
one line per file: its kind, or the error), then learns from those that
passed as a tree of merges (:mod:`histmatch_ml.backends.dask`): only states
travel to the client, which writes the model.

Paths must mean the same files on the workers as on the client (a local
cluster, or a shared file system).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from ._inputs import RunError, UsageError

try:  # (this module is imported only for --scheduler)
    from distributed import WorkerPlugin as _WorkerPlugin
except ImportError:  # the [dask] extra is missing: _distributed() says so
    _WorkerPlugin = object

#: pixels of references read per partition of ``fit``'s bag (memory of a worker)
PARTITION_PIXELS = 2**24


def _distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise RunError(
            "--scheduler needs dask and distributed: pip install 'histmatch_ml[dask]'"
        ) from None
    return distributed


def local_workers(address: str) -> int | None:
    """The worker count of ``local:N`` (0 for ``local``: one per core), None for an address."""
    if address == "local":
        return 0
    if not address.startswith("local:"):
        return None
    count = address.removeprefix("local:")
    if not count.isdigit() or int(count) < 1:
        raise UsageError(f"--scheduler local:N needs a worker count N >= 1; got {address!r}")
    return int(count)


@contextlib.contextmanager
def connect(address: str, jobs: int) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``address``, or of a new local cluster.

    ``local`` starts ``jobs`` single-threaded worker processes, ``local:N``
    starts ``N``; the cluster is closed at the end. Anything else is the
    address of a running scheduler (``tcp://host:8786``).
    """
    distributed = _distributed()
    n_local = local_workers(address)
    with contextlib.ExitStack() as stack:
        if n_local is not None:
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=n_local or jobs,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
            )
            target: Any = cluster
        else:
            target = address
        try:
            client = stack.enter_context(distributed.Client(target, timeout="30s"))
        except (OSError, TimeoutError) as exc:
            raise RunError(f"cannot connect to the dask scheduler at {address}: {exc}") from None
        yield client


def worker_threads(client: Any) -> int:
    """Threads of the cluster's workers, together (at least 1)."""
    workers = client.scheduler_info()["workers"].values()
    return max(1, sum(w.get("nthreads", 1) for w in workers))


class _Setup(_WorkerPlugin):
    """A worker plugin: the worker's model and options, as the process pool's initializer.

    ``model`` is the path of the model file (loaded and checked against
    ``digest`` on the worker) or a fitted matcher (sent to the worker).
    """

    def __init__(self, model: Any, digest: str, options: dict, stop: str) -> None:
        self.model, self.digest, self.options, self.stop = model, digest, options, stop

    def setup(self, worker: Any) -> None:
        import distributed

        from ._runner import _WORKER, _init_worker

        if isinstance(self.model, str):
            _init_worker(self.model, self.digest, self.options)
        else:
            _WORKER.update(matcher=self.model, options=self.options)
        _WORKER["stop"] = distributed.Event(self.stop)

    def teardown(self, worker: Any) -> None:
        from ._runner import _WORKER

        _WORKER.clear()


def transform(
    address: str,
    tasks: list[tuple[str, str, str | None]],
    model_path: str,
    digest: str,
    options: dict,
    *,
    jobs: int,
    fail_fast: bool,
) -> tuple[Any, int]:
    """Run ``histmatch transform``'s tasks on the cluster: ``(outcome, worker threads)``."""
    with connect(address, jobs) as client:
        if local_workers(address) is None:
            options = {**options, "threads": None}  # a shared cluster's workers keep theirs
        return run_on(client, tasks, model_path, digest, options, fail_fast=fail_fast)


def run_on(
    client: Any, tasks: list, model: Any, digest: str, options: dict, *, fail_fast: bool
) -> tuple[Any, int]:
    """:func:`~histmatch_ml.cli._runner._run_tasks` on the workers of ``client``.

    Every worker is set up with ``model`` (a model file's path or a matcher)
    and ``options`` by a worker plugin, removed at the end.
    """
    from ._runner import _run_tasks

    distributed = _distributed()
    stop = distributed.Event(f"histmatch-stop-{uuid.uuid4().hex}", client=client)
    name = f"histmatch-transform-{uuid.uuid4().hex}"
    client.register_plugin(_Setup(model, digest, options, stop.name), name=name)
    try:
        threads = worker_threads(client)
        outcome = _run_tasks(
            tasks,
            threads,
            None,
            (),
            fail_fast=fail_fast,
            desc="transform",
            executor=client.get_executor(pure=False),
            stop=stop,
        )
    finally:
        client.unregister_worker_plugin(name)
    return outcome, threads


def transform_files(
    matcher: Any,
    inputs: list,
    output_dir: Any,
    *,
    overwrite: bool = False,
    png_compression: int = 1,
    client: Any = None,
) -> dict[str, Any]:
    """``histmatch transform`` of ``inputs`` into ``output_dir`` on the workers of ``client``.

    See :func:`histmatch_ml.backends.dask.transform_files`.
    """
    import os
    from pathlib import Path

    from ..io import fingerprint
    from ._inputs import collect_inputs, plan_outputs

    distributed = _distributed()
    if client is None:
        try:
            client = distributed.get_client()
        except ValueError:
            raise ValueError(
                "transform_files runs on a dask cluster: start a distributed.Client first, "
                "or pass client="
            ) from None
    out_dir = Path(output_dir)
    try:
        items, roots, _ = collect_inputs([os.fspath(p) for p in inputs], follow_links=False)
        outputs = plan_outputs(items, roots, out_dir, overwrite=overwrite, skip_existing=False)
    except (UsageError, RunError) as exc:
        raise ValueError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(str(item.path), str(out), None) for item, out in zip(items, outputs)]
    options = {
        "max_pixels": None,
        "overwrite": overwrite,
        "png_level": png_compression,
        "out_dir": str(out_dir),
        "out_real": os.path.realpath(out_dir),
    }
    digest = fingerprint(matcher)
    outcome, _ = run_on(client, tasks, matcher, digest, options, fail_fast=False)
    return {"written": outcome.done, "failed": outcome.failed_paths, "stopped": outcome.stopped}


# ------------------------------------------------------------------------------- fit
def _read_reference(task: tuple[str, str | None], mode: str | None, max_pixels: int | None):
    """One reference as ``fit`` reads it: ``(colour pixels, mask or None)``."""
    from ..io import read_image, read_mask
    from ._runner import _colour

    path, mask_path = task
    data = read_image(path, max_pixels=max_pixels, mode=mode)
    mask = None if mask_path is None else read_mask(mask_path, data.size, max_pixels=max_pixels)
    return _colour(data.pixels), mask


def _check_reference(
    task: tuple[str, str | None], mode: str | None, max_pixels: int | None, method: str
) -> tuple[tuple[str, int, int] | None, str | None, tuple[str, ...]]:
    """One reference read and checked on a worker: its kind, error and warnings.

    The kind is ``(dtype, channels, pixels)``, None when the error says why it failed.
    """
    from .. import _images
    from ..methods import get_method
    from ._runner import _describe, _recording

    with _recording() as caught:
        try:
            colour, mask = _read_reference(task, mode, max_pixels)
            batch = _images.to_batch([colour], None if mask is None else [mask])
            get_method(method).check_channels(batch.n_channels, "reference")
            kind = (batch.dtype.name, batch.n_channels, batch.n_pixels)
            error = None
        except Exception as exc:  # one bad reference must not hide the others
            from pathlib import Path

            kind, error = None, _describe(exc, Path(task[0]))
    return kind, error, tuple(caught)


def check_references(
    client: Any, tasks: dict[int, tuple[str, str | None]], mode: str | None, max_pixels, method
) -> Iterator[tuple[int, tuple | None, str | None, tuple[str, ...]]]:
    """``(index, kind, error, warnings)`` of every reference, in order, read on the workers.

    ``kind`` is ``(dtype, channels, pixels)``, None when ``error`` says why
    the reference failed. Stopping early (``--fail-fast``) cancels the
    checks not yet reported.
    """
    futures = client.map(
        _check_reference,
        list(tasks.values()),
        mode=mode,
        max_pixels=max_pixels,
        method=method,
        pure=False,
    )
    try:
        for index, future in zip(tasks, futures):
            yield (index, *future.result())
    finally:
        client.cancel(futures)


def learn_references(
    matcher: Any,
    tasks: list[tuple[str, str | None]],
    pixels: list[int],
    mode: str | None,
    max_pixels: int | None,
) -> Any:
    """``matcher.fit`` on the references, read on the workers in partitions of about
    :data:`PARTITION_PIXELS` pixels (``pixels``: each reference's, from the check)."""
    import dask.bag as db

    groups: list[list] = [[]]
    budget = 0
    for task, n in zip(tasks, pixels):
        if groups[-1] and budget + n > PARTITION_PIXELS:
            groups.append([])
            budget = 0
        groups[-1].append(task)
        budget += n
    pairs = db.from_sequence(groups, npartitions=len(groups)).flatten()
    pairs = pairs.map(_read_reference, mode, max_pixels)
    with_masks = any(mask_path is not None for _, mask_path in tasks)
    return matcher.fit(pairs.pluck(0), mask=pairs.pluck(1) if with_masks else None)
