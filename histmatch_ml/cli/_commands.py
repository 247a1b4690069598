"""The commands: each takes the parsed arguments and returns the exit status.

A bad argument raises :class:`UsageError` (exit status 2 with the usage); a
file that cannot be read is reported by path and counted, and the command
returns 1 at the end. ``transform`` returns 130 when interrupted, after the
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
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._inputs import UsageError, collect_inputs, find_mask, plan_outputs
from ._runner import (
    _apply,
    _colour,
    _default_jobs,
    _describe,
    _init_worker,
    _progress,
    _report,
    _run_tasks,
    _write_options,
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
        raise UsageError(f"model file not found: {path}")
    if not path.is_file():
        raise UsageError(f"model path is not a file: {path}")


def _load_for_cli(path: Path):
    from ..io import load_model

    _check_model_path(path)
    try:
        return load_model(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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


def _transform(args: argparse.Namespace) -> int:
    from ..io import fingerprint

    model_path = Path(args.model)
    matcher = _load_for_cli(model_path)
    digest = fingerprint(matcher)
    items, roots = collect_inputs(args.inputs)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"output {out_dir} exists and is not a directory")
    outputs = plan_outputs(items, roots, out_dir, overwrite=args.overwrite)
    mask_dir = _mask_dir(args)
    tasks = []
    failed_masks = 0
    for item, out in zip(items, outputs):
        mask = None
        if mask_dir is not None:
            try:
                mask = str(find_mask(mask_dir, item.rel))
            except (OSError, ValueError) as exc:
                print(f"error: {item.path}: {exc}", file=sys.stderr)
                failed_masks += 1
                if args.fail_fast:
                    return 1
                continue
        tasks.append((str(item.path), str(out), mask))
    jobs = max(1, min(args.jobs or _default_jobs(), len(tasks) or 1))
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale(out_dir, "transform", recursive=True)
    options = {
        "max_pixels": args.max_pixels,
        "overwrite": args.overwrite,
        "strength": args.strength,
        "threads": 1 if jobs > 1 else None,
        "png_level": args.png_compression,
        "out_dir": str(out_dir),
        "out_real": os.path.realpath(out_dir),
    }
    start = time.perf_counter()
    try:
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
    done, failed = outcome.done, outcome.failed + failed_masks
    skipped = len(items) - done - failed
    summary = f"histmatch transform: {done} written, {failed} failed"
    if skipped:
        summary += f", {skipped} not processed"
    if outcome.stopped is not None and (skipped or outcome.stopped != "--fail-fast"):
        summary += f" ({outcome.stopped})"
    elapsed = time.perf_counter() - start
    print(f"{summary} in {elapsed:.1f} s with {jobs} job(s); output in {out_dir}")
    if outcome.interrupted:
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
        raise UsageError(f"{what} path {out} exists and is not a file")
    if out.exists() and not overwrite:
        raise UsageError(f"{what} {out} exists already; pass --overwrite to replace it")


def _matcher(args: argparse.Namespace) -> HistogramMatcher:
    """A ``HistogramMatcher`` with every estimator parameter the command has an option for.

    The options are generated from the same declarations (see
    :func:`~histmatch_ml.cli._parser.add_matcher_options`), so a parameter a
    method declares reaches the estimator without being named here.
    """
    from ..matcher import HistogramMatcher, estimator_params

    params = {name: getattr(args, name) for name in estimator_params() if hasattr(args, name)}
    return HistogramMatcher(**params)


def _fit(args: argparse.Namespace) -> int:
    from .. import _images
    from ..io import fingerprint, read_image, read_mask, save_model
    from ..methods import get_method

    items, _ = collect_inputs(args.references)
    out = Path(args.output)
    _check_new_file(out, (item.path for item in items), args.overwrite, "model")
    mask_dir = _mask_dir(args)
    matcher = _matcher(args)
    if out.parent.is_dir():
        _remove_stale(out.parent, "fit", recursive=False)
    images: list[Any] = []
    masks: list[np.ndarray] = []
    pooled = learned = failed = 0
    signature = None
    start = time.perf_counter()

    def flush() -> None:
        nonlocal pooled
        if images:
            matcher.partial_fit(images, mask=masks if mask_dir is not None else None)
            images.clear()
            masks.clear()
            pooled = 0

    with _progress(len(items), "fit") as bar:
        for item in items:
            bar.update(1)
            try:
                data = read_image(item.path, max_pixels=args.max_pixels)
                mask = None
                if mask_dir is not None:
                    mask_path = find_mask(mask_dir, item.rel)
                    mask = read_mask(mask_path, data.size, max_pixels=args.max_pixels)
                colour = _colour(data.pixels)
                batch = _images.to_batch([colour], None if mask is None else [mask])
                get_method(args.method).check_channels(batch.n_channels, "reference")
                kind = (batch.dtype.name, batch.n_channels)
                if signature is not None and kind != signature:
                    raise ValueError(
                        f"has dtype {kind[0]} with {kind[1]} channel(s); the references "
                        f"before it have {signature[0]} with {signature[1]}"
                    )
            except Exception as exc:  # one bad reference must not stop the others
                failed += 1
                _report(bar, item.path, _describe(exc, item.path))
                if args.fail_fast:
                    break
                continue
            signature = kind
            images.append(colour)
            if mask is not None:
                masks.append(mask)
            learned += 1
            pooled += batch.n_pixels
            if pooled >= FIT_CHUNK_PIXELS:
                flush()
        if not (failed and args.fail_fast):
            flush()
    if failed and args.fail_fast:
        print(f"histmatch fit: stopped at the first error (--fail-fast); {out} not written")
        return 1
    if not learned:
        print(f"histmatch fit: no reference image could be read; {out} not written")
        return 1
    out.parent.mkdir(parents=True, exist_ok=True)
    save_model(matcher, out, overwrite=args.overwrite)
    elapsed = time.perf_counter() - start
    print(
        f"histmatch fit: learned {matcher.method_} from {matcher.n_images_seen_} image(s) "
        f"({matcher.n_pixels_seen_:,} pixels), {failed} failed, in {elapsed:.1f} s; wrote "
        f"{out} (fingerprint {fingerprint(matcher)[:16]})"
    )
    return 1 if failed else 0


def _match(args: argparse.Namespace) -> int:
    from ..io import format_for_path, read_image, write_image
    from ..io._image_files import carried_options

    source, reference, out = Path(args.source), Path(args.reference), Path(args.output)
    for path, what in ((source, "source"), (reference, "reference")):
        if not path.is_file():
            raise UsageError(f"{what} image not found: {path}")
    _check_new_file(out, (source, reference), args.overwrite, "output")
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
            data[what] = read_image(path, max_pixels=args.max_pixels)
        except Exception as exc:
            print(f"error: {path}: {_describe(exc, path)}", file=sys.stderr)
            return 1
    try:
        matcher.fit(_colour(data["reference"].pixels))
        result = _apply(matcher, data["source"].pixels, None)
        source_data = data["source"]
        options = carried_options(source_data.save_options, source_data.format, fmt)
        options = _write_options(fmt, options, args.png_compression)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_image(result, out, format=fmt, save_options=options, overwrite=args.overwrite)
    except Exception as exc:
        print(f"error: {out}: {_describe(exc, out)}", file=sys.stderr)
        return 1
    width, height = data["source"].size
    print(f"histmatch match: wrote {out} ({width}x{height}, method={args.method})")
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
        raise UsageError(str(exc)) from None
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
