"""The commands: each takes the parsed arguments and returns the exit status.

A bad argument raises :class:`UsageError` (exit status 2 with the usage); a
run that cannot go on (missing or invalid model, existing output) raises
:class:`RunError` (one line, exit status 1); a file that cannot be read is
reported by path and counted, and the command returns 1 at the end. Every
input found is accounted for in the summary: written, skipped (each with a
line saying why) or failed (each named). ``transform`` returns 130 when interrupted, after the
files in progress are written. Before writing, ``transform``, ``fit`` and
``match`` remove the temporary files that killed runs left in their output
(see :func:`histmatch_ml.io._atomic.remove_stale_temp_files`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._inputs import RunError, Skip, UsageError, collect_inputs, find_mask, plan_outputs
from ._runner import (
    _apply,
    _colour,
    _default_jobs,
    _describe,
    _init_worker,
    _progress,
    _recording,
    _report,
    _run_tasks,
    _warn,
    _write_options,
    transform_volume_file,
)

if TYPE_CHECKING:  # pragma: no cover - the estimator loads scikit-learn
    from ..matcher import HistogramMatcher

#: pixels pooled per ``partial_fit`` call of ``histmatch fit``
FIT_CHUNK_PIXELS = 2**25


def _demo(args: argparse.Namespace) -> int:
    """Match skimage's bundled astronaut to the coffee photo; write PNGs and a figure."""
    from PIL import Image
    from skimage import data

    from ..functions import match_histograms
    from ..metrics import histogram_distance

    out_dir = Path(args.output)
    out_dir.mkdir(parents=True, exist_ok=True)
    source, reference = data.astronaut(), data.coffee()
    matched = match_histograms(source, reference, method=args.method)
    paths = {}
    for name, image in (("source", source), ("reference", reference), ("matched", matched)):
        paths[name] = out_dir / f"{name}.png"
        Image.fromarray(image).save(paths[name])
    before = histogram_distance(source, reference).mean()
    after = histogram_distance(matched, reference).mean()
    print(f"histmatch demo: astronaut (512x512) matched to coffee (400x600), method={args.method}")
    print(f"  histogram distance to the reference (W1, grey levels): {before:.2f} -> {after:.2f}")
    try:  # the figure needs the [plot] extra (matplotlib), imported on use
        from ..plotting import plot_matching

        fig = plot_matching(source, matched, reference, title=f"method={args.method}")
    except ImportError as exc:
        print(f"  (no figure: {exc})", file=sys.stderr)
    else:
        paths["figure"] = out_dir / "matching.png"
        fig.savefig(paths["figure"], dpi=80)
    for name, path in paths.items():
        print(f"  wrote {name:<9} {path}")
    return 0


def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise RunError(f"model file not found: {path}")
    if not path.is_file():
        raise RunError(f"model path is not a file: {path}")


def _load_for_cli(path: Path):
    from ..io import load_model

    _check_model_path(path)
    try:
        return load_model(path)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def _mode(args: argparse.Namespace) -> str | None:
    """The mode ``--mode`` converts every image to on read; None for ``keep``."""
    return None if args.mode == "keep" else args.mode


def _print_skips(skips: list[Skip]) -> int:
    """One line per path the discovery did not take; the number of input files among them."""
    for skip in skips:
        print(f"skipped: {skip.path}: {skip.reason}", file=sys.stderr)
    return sum(skip.file for skip in skips)


def _failed_line(command: str, paths: list[str], what: str = "failed") -> None:
    if paths:
        print(f"histmatch {command}: {what}: {', '.join(map(str, paths))}")


def _remove_stale(directory: Path, command: str, *, recursive: bool) -> None:
    """Remove the temporary files of killed runs from ``directory``; say so on stderr."""
    from ..io._atomic import remove_stale_temp_files

    removed = remove_stale_temp_files(directory, recursive=recursive)
    if removed:
        print(
            f"histmatch {command}: removed {len(removed)} temporary file(s) left in "
            f"{directory} by interrupted runs",
            file=sys.stderr,
        )


def _item_mask(mask_dir: Any, item: Any, failed: list[str]) -> tuple[str | None, bool]:
    """``(mask path, True)`` for an input (``None`` without ``mask_dir``), or ``(None, False)``.

    A missing or unreadable mask is reported on stderr and the input named in ``failed``.
    """
    if mask_dir is None:
        return None, True
    try:
        return str(find_mask(mask_dir, item.rel)), True
    except (OSError, ValueError) as exc:
        print(f"error: {item.path}: {exc}", file=sys.stderr)
        failed.append(str(item.path))
        return None, False


def _transform(args: argparse.Namespace) -> int:
    from ..io import fingerprint

    if args.skip_existing and args.overwrite:
        raise UsageError("--skip-existing and --overwrite exclude each other; choose one")
    model_path = Path(args.model)
    matcher = _load_for_cli(model_path)
    digest = fingerprint(matcher)
    items, roots, skips = collect_inputs(args.inputs, follow_links=args.follow_links)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise RunError(f"output {out_dir} exists and is not a directory")
    outputs = plan_outputs(
        items, roots, out_dir, overwrite=args.overwrite, skip_existing=args.skip_existing
    )
    skipped = _print_skips(skips)
    mask_dir = _mask_dir(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    # before the check of existing outputs: a temporary file is not an output
    _remove_stale(out_dir, "transform", recursive=True)
    tasks = []
    failed_masks: list[str] = []
    existing = 0
    for item, out in zip(items, outputs):
        if args.skip_existing and (out.exists() or out.is_symlink()):
            existing += 1  # written whole by an earlier run: outputs are written atomically
            continue
        mask, found = _item_mask(mask_dir, item, failed_masks)
        if not found:
            if args.fail_fast:
                return 1
            continue
        tasks.append((str(item.path), str(out), mask))
    if existing:
        print(
            f"histmatch transform: {existing} input(s) skipped, their output exists already "
            "(--skip-existing)",
            file=sys.stderr,
        )
    jobs = max(1, min(args.jobs or _default_jobs(), len(tasks) or 1))
    options = {
        "max_pixels": args.max_pixels,
        "mode": _mode(args),
        "overwrite": args.overwrite,
        "strength": args.strength,
        "threads": 1 if jobs > 1 else None,
        "png_level": args.png_compression,
        "out_dir": str(out_dir),
        "out_real": os.path.realpath(out_dir),
    }
    start = time.perf_counter()
    try:
        if args.scheduler is not None and tasks:
            from . import _dask_runner

            outcome, jobs = _dask_runner.transform(
                args.scheduler,
                tasks,
                str(model_path),
                digest,
                {**options, "threads": 1},
                jobs=args.jobs or _default_jobs(),
                fail_fast=args.fail_fast,
            )
        else:
            outcome = _run_tasks(
                tasks,
                jobs,
                _init_worker,
                (str(model_path), digest, options),
                fail_fast=args.fail_fast,
                desc="transform",
            )
    except (BrokenProcessPool, RuntimeError, ValueError) as exc:
        print(f"histmatch transform: error: {exc}", file=sys.stderr)
        return 1
    done, failed = outcome.done, outcome.failed + len(failed_masks)
    skipped += existing
    not_processed = len(items) - existing - done - failed
    summary = f"histmatch transform: {done} written, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    if not_processed:
        summary += f", {not_processed} not processed"
    if outcome.stopped is not None and (not_processed or outcome.stopped != "--fail-fast"):
        summary += f" ({outcome.stopped})"
    elapsed = time.perf_counter() - start
    print(f"{summary} in {elapsed:.1f} s with {jobs} job(s); output in {out_dir}")
    _failed_line("transform", failed_masks + outcome.failed_paths)
    if outcome.interrupted:
        print(
            f"histmatch transform: interrupted after writing {done} file(s); to finish, run "
            "the same command again with --skip-existing (the files written are kept)",
            file=sys.stderr,
        )
        return 130
    return 1 if failed else 0


def _mask_dir(args: argparse.Namespace) -> Path | None:
    if args.mask_dir is None:
        return None
    mask_dir = Path(args.mask_dir)
    if not mask_dir.is_dir():
        raise UsageError(f"mask directory not found: {mask_dir}")
    return mask_dir


def _check_new_file(out: Path, inputs: Iterable[Path], overwrite: bool, what: str) -> None:
    out_real = out.resolve()
    for path in inputs:
        if path.resolve() == out_real:
            raise UsageError(f"refusing to write the {what} over the input {path}")
    if out.exists() and not out.is_file():
        raise RunError(f"{what} path {out} exists and is not a file")
    if out.exists() and not overwrite:
        raise RunError(f"{what} {out} exists already; pass --overwrite to replace it")


def _fit_tasks(
    items: list, mask_dir: Path | None, failed: list[str], fail_fast: bool
) -> dict[int, tuple[str, str | None]]:
    """``index -> (path, mask path)`` of the references to read on the workers.

    A reference whose mask is missing is reported and named in ``failed``
    instead; with ``fail_fast`` none after it is planned.
    """
    tasks = {}
    for index, item in enumerate(items):
        mask, found = _item_mask(mask_dir, item, failed)
        if not found:
            if fail_fast:
                break
            continue
        tasks[index] = (str(item.path), mask)
    return tasks


def _matcher(args: argparse.Namespace) -> HistogramMatcher:
    """A ``HistogramMatcher`` with every estimator parameter the command has an option for.

    The options are generated from the same declarations (see
    :func:`~histmatch_ml.cli._parser.add_matcher_options`), so a parameter a
    method declares reaches the estimator without being named here.
    """
    from ..matcher import HistogramMatcher, estimator_params

    names = getattr(args, "matcher_params", estimator_params())
    params = {name: getattr(args, name) for name in names if hasattr(args, name)}
    return HistogramMatcher(**params)


def _kind_text(kind: tuple[str, int], count: int) -> str:
    dtype, channels = kind
    return f"{count} {dtype} with {channels} channel(s)"


def _fit(args: argparse.Namespace) -> int:
    if args.scheduler is None:
        return _fit_on(args, None)
    from . import _dask_runner

    with _dask_runner.connect(args.scheduler, _default_jobs()) as client:
        return _fit_on(args, client)


def _fit_on(args: argparse.Namespace, client: Any) -> int:
    """``histmatch fit``, in this process (``client`` None) or on a dask cluster."""
    from .. import _images
    from ..io import fingerprint, read_image, read_mask, read_volume, read_volume_mask, save_model
    from ..io._volume_files import is_volume_file
    from ..methods import get_method

    items, _, skips = collect_inputs(args.references, follow_links=args.follow_links)
    out = Path(args.output)
    _check_new_file(out, (item.path for item in items), args.overwrite, "model")
    mask_dir = _mask_dir(args)
    matcher = _matcher(args)
    mode = _mode(args)
    skipped = _print_skips(skips)
    if out.parent.is_dir():
        _remove_stale(out.parent, "fit", recursive=False)
    if args.strength != 1:
        print(
            f"histmatch fit: note: --strength {args.strength:g} does not change what is "
            "learned; it is stored in the model and blends each result with its input at "
            "transform time ('histmatch transform --strength' overrides it)",
            file=sys.stderr,
        )
    start = time.perf_counter()

    volumes = [is_volume_file(item.path) for item in items]
    if any(volumes):  # NIfTI references: a model of volumes (images and volumes do not mix)
        if not all(volumes):
            raise UsageError(
                "the references mix volume (.nii, .nii.gz, .nrrd, ...) and image files"
            )
        matcher.set_params(spatial_dims=3)

    def load(item: Any) -> tuple[Any, np.ndarray | None, Any]:
        if is_volume_file(item.path):
            data = read_volume(item.path).data
            mask = None
            if mask_dir is not None:
                mask = read_volume_mask(find_mask(mask_dir, item.rel), data.shape[:3])
            batch = _images.to_batch([data], None if mask is None else [mask], spatial_dims=3)
            return data, mask, batch
        data = read_image(item.path, max_pixels=args.max_pixels, mode=mode)
        mask = None
        if mask_dir is not None:
            mask_path = find_mask(mask_dir, item.rel)
            mask = read_mask(mask_path, data.size, max_pixels=args.max_pixels)
        colour = _colour(data.pixels)
        batch = _images.to_batch([colour], None if mask is None else [mask])
        return colour, mask, batch

    # every reference is read and checked before anything is learned: one kind of image
    # (dtype and channels) makes a model, and a bad file stops the run unless --keep-going
    kinds: dict[int, tuple[str, int]] = {}
    held: dict[int, tuple[Any, np.ndarray | None, int]] = {}
    budget = FIT_CHUNK_PIXELS
    failed: list[str] = []
    if client is not None:
        budget, pixels, tasks = 0, {}, _fit_tasks(items, mask_dir, failed, args.fail_fast)
    with _progress(len(items), "fit: read") as bar:
        if client is not None:  # read and checked on the workers
            from ._dask_runner import check_references

            checks = check_references(client, tasks, mode, args.max_pixels, args.method)
            for index, kind, error, caught in checks:
                bar.update(1)
                _warn(bar, items[index].path, caught)
                if error is not None:
                    failed.append(str(items[index].path))
                    _report(bar, items[index].path, error)
                    if args.fail_fast:
                        break
                    continue
                kinds[index], pixels[index] = kind[:2], kind[2]
        for index, item in enumerate(items if client is None else []):
            bar.update(1)
            try:
                with _recording() as caught:
                    colour, mask, batch = load(item)
                    get_method(args.method).check_channels(batch.n_channels, "reference")
            except Exception as exc:  # one bad reference must not hide the others
                failed.append(str(item.path))
                _warn(bar, item.path, caught)
                _report(bar, item.path, _describe(exc, item.path))
                if args.fail_fast:
                    break
                continue
            _warn(bar, item.path, caught)
            kinds[index] = (batch.dtype.name, batch.n_channels)
            if batch.n_pixels <= budget:  # kept for learning: not read twice
                held[index] = (colour, mask, batch.n_pixels)
                budget -= batch.n_pixels
    if failed and args.fail_fast:
        print(f"histmatch fit: stopped at the first error (--fail-fast); {out} not written")
        return 1
    counts = Counter(kinds.values())
    if len(counts) > 1:
        found = ", ".join(_kind_text(kind, n) for kind, n in counts.most_common())
        print(
            f"histmatch fit: error: the references are of {len(counts)} kinds ({found}); a "
            f"model learns one: pass --mode RGB or --mode L to convert them on read; "
            f"{out} not written",
            file=sys.stderr,
        )
        return 1
    if failed and not args.keep_going:
        print(
            f"histmatch fit: {len(failed)} reference(s) failed ({', '.join(failed)}); {out} not "
            f"written (pass --keep-going to learn from the {len(kinds)} others)"
        )
        return 1
    if not kinds:
        print(f"histmatch fit: no reference image could be read; {out} not written")
        return 1
    images: list[Any] = []
    masks: list[np.ndarray] = []
    pooled = 0
    if client is not None:  # a tree of merges on the workers
        from ._dask_runner import learn_references

        try:
            learned = [tasks[index] for index in kinds]
            learn_references(matcher, learned, [pixels[i] for i in kinds], mode, args.max_pixels)
        except (OSError, ValueError, TypeError) as exc:  # changed since it was read
            print(f"histmatch fit: error: {exc}; {out} not written", file=sys.stderr)
            return 1
        kinds = {}
    with _progress(len(kinds), "fit: learn") as bar:
        for index in kinds:
            item = items[index]
            bar.update(1)
            if index in held:
                colour, mask, n_pixels = held.pop(index)
            else:
                try:
                    colour, mask, batch = load(item)
                except Exception as exc:  # changed since it was read: still accounted for
                    failed.append(str(item.path))
                    _report(bar, item.path, _describe(exc, item.path))
                    continue
                n_pixels = batch.n_pixels
            images.append(colour)
            if mask is not None:
                masks.append(mask)
            pooled += n_pixels
            if pooled >= FIT_CHUNK_PIXELS:
                matcher.partial_fit(images, mask=masks if mask_dir is not None else None)
                images, masks, pooled = [], [], 0
        if images:
            matcher.partial_fit(images, mask=masks if mask_dir is not None else None)
    if failed and not args.keep_going:
        print(f"histmatch fit: {', '.join(failed)} changed while reading; {out} not written")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(matcher, out, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    extra = f", {skipped} skipped" if skipped else ""
    print(
        f"histmatch fit: learned {matcher.method_} from {matcher.n_images_seen_} image(s) "
        f"({matcher.n_pixels_seen_:,} pixels), {len(failed)} failed{extra}, in {elapsed:.1f} s; "
        f"wrote {out} (fingerprint {fingerprint(matcher)[:16]})"
    )
    _failed_line("fit", failed, "left out (failed, --keep-going)")
    return 1 if failed else 0


def _match(args: argparse.Namespace) -> int:
    from ..io import format_for_path, read_image, write_image
    from ..io._image_files import carried_options
    from ..io._volume_files import is_volume_file

    source, reference, out = Path(args.source), Path(args.reference), Path(args.output)
    for path, what in ((source, "source"), (reference, "reference")):
        if not path.is_file():
            raise UsageError(f"{what} image not found: {path}")
    _check_new_file(out, (source, reference), args.overwrite, "output")
    if any(map(is_volume_file, (source, reference, out))):
        return _match_volumes(args, source, reference, out)
    try:
        fmt = format_for_path(out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    matcher = _matcher(args)
    if out.parent.is_dir():
        _remove_stale(out.parent, "match", recursive=False)
    data: dict[str, Any] = {}
    for path, what in ((source, "source"), (reference, "reference")):
        try:
            with _recording() as caught:
                data[what] = read_image(path, max_pixels=args.max_pixels)
        except Exception as exc:
            print(f"error: {path}: {_describe(exc, path)}", file=sys.stderr)
            return 1
        finally:
            _warn(None, path, caught)
    # each step's error names the file it comes from
    step = reference
    try:
        with _recording() as caught:
            matcher.fit(_colour(data["reference"].pixels))
            step = source
            result = _apply(matcher, data["source"].pixels, None)
            step = out
            source_data = data["source"]
            options = carried_options(source_data.save_options, source_data.format, fmt)
            options = _write_options(fmt, options, args.png_compression)
            out.parent.mkdir(parents=True, exist_ok=True)
            write_image(result, out, format=fmt, save_options=options, overwrite=args.overwrite)
    except Exception as exc:
        print(f"error: {step}: {_describe(exc, step)}", file=sys.stderr)
        return 1
    finally:
        _warn(None, source, caught)
    width, height = data["source"].size
    print(f"histmatch match: wrote {out} ({width}x{height}, method={args.method})")
    return 0


def _match_volumes(args: argparse.Namespace, source: Path, reference: Path, out: Path) -> int:
    """``histmatch match`` for NIfTI volumes: OUT keeps SOURCE's affine, header and dtype."""
    from ..io import read_volume
    from ..io._volume_files import is_volume_file

    for path in (source, reference, out):
        if not is_volume_file(path):
            raise UsageError(
                f"{path} is not a volume file (.nii, .nii.gz, .nrrd, .mha, .mhd): "
                "match volumes to volumes"
            )
    matcher = _matcher(args).set_params(spatial_dims=3)
    if out.parent.is_dir():
        _remove_stale(out.parent, "match", recursive=False)
    step = reference
    try:
        with _recording() as caught:
            matcher.fit([read_volume(reference).data])
            step = source
            transform_volume_file(matcher, source, out, None, args.overwrite)
    except Exception as exc:
        print(f"error: {step}: {_describe(exc, step)}", file=sys.stderr)
        return 1
    finally:
        _warn(None, source, caught)
    print(f"histmatch match: wrote {out} (method={args.method})")
    return 0


_LABELS = {
    "method_": "method",
    "dtype_": "dtype",
    "n_channels_": "channels",
    "n_images_seen_": "images seen",
    "n_pixels_seen_": "pixels seen",
    "n_features_in_": "features in",
}


def _inspect(args: argparse.Namespace) -> int:
    from ..io import model_summary

    path = Path(args.model)
    _check_model_path(path)
    try:
        summary = model_summary(path)
    except ValueError as exc:
        raise RunError(str(exc)) from None
    if args.json:
        print(json.dumps({"file": str(path), **summary}, indent=2, default=str))
        return 0
    rows = [("file", str(path)), ("class", summary["class"])]
    attrs = dict(summary["attributes"])
    for name, label in _LABELS.items():
        if name in attrs:
            value = attrs.pop(name)
            rows.append((label, f"{value:,}" if isinstance(value, int) else str(value)))
    rows += [(name, str(value)) for name, value in attrs.items()]
    params = ", ".join(f"{k}={v!r}" for k, v in summary["params"].items())
    rows.append(("params", params))
    strength = summary["params"].get("strength")
    if strength is not None:
        rows.append(
            ("strength", f"{strength:g} (applied at transform time: blend with the input)")
        )
    for name, desc in summary["arrays"].items():
        rows.append((f"array {name}", desc))
    rows.append(
        ("format", f"{summary['format_version']} (histmatch_ml {summary['library_version']})")
    )
    rows.append(("fingerprint", f"sha256:{summary['fingerprint']}"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {value}")
    return 0
