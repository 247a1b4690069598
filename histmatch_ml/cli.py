"""The ``histmatch`` command line (also ``python -m histmatch_ml``).

Commands::

    histmatch match SOURCE REFERENCE -o OUT [--method M] [--strength S]
    histmatch fit REFS... -o MODEL.npz [--method M] [--mask-dir DIR]
    histmatch transform -m MODEL.npz INPUTS... -o OUTDIR [--jobs N] [--overwrite]
    histmatch inspect MODEL.npz
    histmatch demo [-o DIR]

Inputs are files, directories (read recursively) or glob patterns. Nothing is
ever written over an input; existing outputs are replaced only with
``--overwrite``; every write is atomic. A file that cannot be read is reported
by path on stderr and skipped, the others are still processed, and the exit
status is 1 at the end (``--fail-fast`` stops at the first). Bad arguments
exit with status 2, a one-line error and the usage.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__

#: pixels pooled per ``partial_fit`` call of ``histmatch fit``
FIT_CHUNK_PIXELS = 2**25


class UsageError(Exception):
    """A bad argument: reported as one line plus the usage, exit status 2."""


# ----------------------------------------------------------------------------- demo
def _demo(args: argparse.Namespace) -> int:
    """Match skimage's bundled astronaut to the coffee photo; write PNGs and a figure."""
    from PIL import Image
    from skimage import data

    from .functions import match_histograms
    from .metrics import histogram_distance

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
    try:
        from .plotting import plot_matching
    except ImportError:
        plot_matching = None
    try:
        fig = plot_matching(source, matched, reference, title=f"method={args.method}")
    except ImportError as exc:
        print(f"  (no figure: {exc})", file=sys.stderr)
    else:
        paths["figure"] = out_dir / "matching.png"
        fig.savefig(paths["figure"], dpi=80)
    for name, path in paths.items():
        print(f"  wrote {name:<9} {path}")
    return 0


# --------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class _Item:
    """One input file and its path relative to the root it was found under."""

    path: Path
    rel: Path


@dataclass(frozen=True)
class _Root:
    """An input directory (read recursively) or glob pattern, for the re-read check."""

    directory: Path  # absolute
    pattern: str | None = None  # absolute glob pattern, None for a directory


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _walk(directory: Path, extensions: frozenset[str]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in extensions:
                found.append(Path(dirpath) / name)
    return found


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without wildcards."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def collect_inputs(specs: Iterable[str]) -> tuple[list[_Item], list[_Root]]:
    """Files named by ``specs`` (files, directories recursively, or globs), in order.

    Directories and globs yield the image files Pillow can read (hidden files
    and directories skipped); a file named explicitly is always taken.
    Raises :class:`UsageError` for a spec that matches nothing.
    """
    from .io import image_extensions

    extensions = image_extensions()
    items: list[_Item] = []
    roots: list[_Root] = []
    seen: set[Path] = set()

    def add(path: Path, root: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append(_Item(path, path.relative_to(root)))

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            roots.append(_Root(path.resolve()))
            files = _walk(path, extensions)
            if not files:
                raise UsageError(f"no image files found in directory {spec}")
            for f in files:
                add(f, path)
        elif path.is_file():
            add(path, path.parent)
        elif glob.has_magic(spec):
            root = _glob_root(spec)
            roots.append(_Root(root.resolve(), os.path.abspath(spec)))
            files = [
                Path(m)
                for m in sorted(glob.glob(spec, recursive=True))
                if Path(m).is_file() and Path(m).suffix.lower() in extensions
            ]
            files = [f for f in files if not _is_hidden(f.relative_to(root))]
            if not files:
                raise UsageError(f"no image files match {spec}")
            for f in files:
                add(f, root)
        else:
            raise UsageError(f"input not found: {spec}")
    return items, roots


def _pattern_matches(pattern: str, path: Path) -> bool:
    """Whether the absolute glob ``pattern`` would pick up the absolute ``path``."""
    if "**" in pattern:
        return True  # recursive: anything under its root may be re-read
    p_parts, parts = Path(pattern).parts, path.parts
    return len(p_parts) == len(parts) and all(
        fnmatch.fnmatchcase(part, pat) for part, pat in zip(parts, p_parts)
    )


def _is_within(path: Path, directory: Path) -> bool:
    return path == directory or directory in path.parents


def plan_outputs(
    items: list[_Item], roots: list[_Root], out_dir: Path, *, overwrite: bool
) -> list[Path]:
    """Output path of every input under ``out_dir``, after every safety check.

    Raises :class:`UsageError` if ``out_dir`` lies inside an input directory
    (or where an input glob would pick the outputs up), if an output would
    be an input file, if two inputs map to one output, or if outputs exist
    and ``overwrite`` is False.
    """
    out_abs = Path(os.path.abspath(out_dir))
    out_real = out_dir.resolve()
    for root in roots:
        if root.pattern is None and _is_within(out_real, root.directory):
            raise UsageError(
                f"output directory {out_dir} is inside the input directory "
                f"{root.directory}, which is read recursively; choose one outside it"
            )
    outputs = [out_dir / item.rel for item in items]
    for root in roots:
        if root.pattern is not None and _is_within(out_real, root.directory):
            for out in outputs:
                if _pattern_matches(root.pattern, Path(os.path.abspath(out))):
                    raise UsageError(
                        f"output directory {out_dir} is where the input pattern "
                        f"{root.pattern} would read the outputs again; choose another"
                    )
    inputs = {item.path.resolve() for item in items}
    targets: dict[Path, Path] = {}
    for item, out in zip(items, outputs):
        key = (out_abs / item.rel).resolve()
        if key in inputs:
            raise UsageError(f"refusing to write over the input {item.path} (output {out})")
        if key in targets:
            raise UsageError(
                f"inputs {targets[key]} and {item.path} would both be written to {out}"
            )
        targets[key] = item.path
    if not overwrite:
        existing = [out for out in outputs if out.exists()]
        if existing:
            raise UsageError(
                f"{len(existing)} output file(s) exist already (first: {existing[0]}); "
                f"pass --overwrite to replace them"
            )
    return outputs


def find_mask(mask_dir: Path, rel: Path) -> Path:
    """The mask of the input at relative path ``rel``: ``mask_dir/rel``, or the
    single file ``mask_dir/<rel without suffix>.<any image suffix>``."""
    from .io import image_extensions

    exact = mask_dir / rel
    if exact.is_file():
        return exact
    folder = mask_dir / rel.parent
    exts = image_extensions()
    candidates = (
        sorted(
            p
            for p in folder.iterdir()
            if p.is_file() and p.stem == rel.stem and p.suffix.lower() in exts
        )
        if folder.is_dir()
        else []
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"no mask {exact} (nor {rel.stem}.* in {folder})")
    raise ValueError(f"ambiguous masks for {rel}: {', '.join(map(str, candidates))}")


# ---------------------------------------------------------------------- processing
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
    from .io import fingerprint, load_model

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
    from .io import read_image, read_mask, write_image

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
    re-import), else ``forkserver`` with the package preloaded, else ``spawn``."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["histmatch_ml.cli"])
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


# ------------------------------------------------------------------------ commands
def _check_model_path(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if not path.is_file():
        raise UsageError(f"model path is not a file: {path}")


def _load_for_cli(path: Path):
    from .io import load_model

    _check_model_path(path)
    try:
        return load_model(path)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _transform(args: argparse.Namespace) -> int:
    from .io import fingerprint

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
    options = {
        "max_pixels": args.max_pixels,
        "overwrite": args.overwrite,
        "strength": args.strength,
        "threads": 1 if jobs > 1 else None,
        "png_level": args.png_compression,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        done, failed = _run_tasks(
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
    failed += failed_masks
    skipped = len(items) - done - failed
    summary = f"histmatch transform: {done} written, {failed} failed"
    if skipped:
        summary += f", {skipped} not processed (--fail-fast)"
    elapsed = time.perf_counter() - start
    print(f"{summary} in {elapsed:.1f} s with {jobs} job(s); output in {out_dir}")
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


def _fit(args: argparse.Namespace) -> int:
    from . import _images
    from .io import fingerprint, read_image, read_mask, save_model
    from .matcher import HistogramMatcher
    from .methods import get_method

    items, _ = collect_inputs(args.references)
    out = Path(args.output)
    _check_new_file(out, (item.path for item in items), args.overwrite, "model")
    mask_dir = _mask_dir(args)
    matcher = HistogramMatcher(
        method=args.method,
        strength=args.strength,
        n_quantiles=args.n_quantiles,
        random_state=args.random_state,
    )
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
    from .io import format_for_path, read_image, write_image
    from .matcher import HistogramMatcher

    source, reference, out = Path(args.source), Path(args.reference), Path(args.output)
    for path, what in ((source, "source"), (reference, "reference")):
        if not path.is_file():
            raise UsageError(f"{what} image not found: {path}")
    _check_new_file(out, (source, reference), args.overwrite, "output")
    try:
        fmt = format_for_path(out)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    matcher = HistogramMatcher(
        method=args.method, strength=args.strength, random_state=args.random_state
    )
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
        options = data["source"].save_options if fmt == data["source"].format else {}
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
    from .io import model_summary

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


# -------------------------------------------------------------------------- parser
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1]; got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1]; got {text}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer; got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}; got {value}")
        return value

    parse.__name__ = "int"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``histmatch`` argument parser (one sub-command per workflow)."""
    from .methods import available_methods

    methods = available_methods()
    parser = argparse.ArgumentParser(
        prog="histmatch", description="Histogram matching for images and datasets."
    )
    parser.add_argument("--version", action="version", version=f"histmatch_ml {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, func: Callable, help: str, description: str):
        p = sub.add_parser(name, help=help, description=description)
        p.set_defaults(func=func, parser=p)
        return p

    def png_compression(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--png-compression",
            type=_int_at_least(0),
            choices=range(10),
            default=1,
            metavar="0-9",
            help="zlib level of PNG outputs (default 1: fast; 6 is Pillow's default, "
            "about 10%% smaller and 3x slower to write)",
        )

    def max_pixels(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--max-pixels",
            type=_int_at_least(1),
            metavar="N",
            help="refuse images with more pixels (Pillow's decompression-bomb limit "
            "always applies too)",
        )

    demo = command(
        "demo",
        _demo,
        "match two bundled sample images and write the result",
        "Match scikit-image's astronaut to its coffee photo; write PNGs and a figure.",
    )
    demo.add_argument("-o", "--output", default="histmatch_demo", help="output directory")
    demo.add_argument("--method", default="per_channel", choices=methods)

    match = command(
        "match",
        _match,
        "match one image to one reference image",
        "Match SOURCE to REFERENCE and write OUT; the format follows OUT's suffix and "
        "16-bit PNG/TIFF stay 16-bit.",
    )
    match.add_argument("source", help="image to match")
    match.add_argument("reference", help="reference image")
    match.add_argument("-o", "--output", required=True, metavar="OUT", help="output image")
    match.add_argument("--method", default="per_channel", choices=methods)
    match.add_argument("--strength", type=_fraction, default=1.0, help="blend, 0..1")
    match.add_argument("--random-state", type=int, default=0, metavar="SEED")
    match.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    png_compression(match)
    max_pixels(match)

    fit = command(
        "fit",
        _fit,
        "learn a reference from a set of images and save the model",
        "Learn the pooled reference distribution of REFS (files, directories read "
        "recursively, or glob patterns) and save it as an .npz model file.",
    )
    fit.add_argument("references", nargs="+", metavar="REFS", help="files, directories, globs")
    fit.add_argument("-o", "--output", required=True, metavar="MODEL.npz", help="model file")
    fit.add_argument("--method", default="per_channel", choices=methods)
    fit.add_argument("--strength", type=_fraction, default=1.0, help="blend, 0..1")
    fit.add_argument("--n-quantiles", type=_int_at_least(2), default=1024, metavar="N")
    fit.add_argument("--random-state", type=int, default=0, metavar="SEED")
    fit.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="masks mirroring the references' layout (same relative path, any image "
        "suffix); non-zero pixels are counted",
    )
    fit.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists")
    fit.add_argument("--fail-fast", action="store_true", help="stop at the first bad file")
    max_pixels(fit)

    transform = command(
        "transform",
        _transform,
        "match many images to a saved model",
        "Match INPUTS (files, directories read recursively, or glob patterns) to the "
        "model and write them under OUTDIR with the same relative paths and formats.",
    )
    transform.add_argument("-m", "--model", required=True, metavar="MODEL.npz")
    transform.add_argument("inputs", nargs="+", metavar="INPUTS", help="files, dirs, globs")
    transform.add_argument("-o", "--output", required=True, metavar="OUTDIR")
    transform.add_argument(
        "-j",
        "--jobs",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="worker processes (default: all cores)",
    )
    transform.add_argument(
        "--strength", type=_fraction, default=None, help="override the model's strength"
    )
    transform.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="masks mirroring the inputs' layout; only non-zero pixels are changed",
    )
    transform.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    transform.add_argument("--fail-fast", action="store_true", help="stop at the first bad file")
    png_compression(transform)
    max_pixels(transform)

    inspect = command(
        "inspect",
        _inspect,
        "print what a model file holds",
        "Check a model file and print its method, parameters, dtype, channels, images "
        "seen and fingerprint.",
    )
    inspect.add_argument("model", metavar="MODEL.npz")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``histmatch`` console script.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 if any file failed, 2 for bad arguments (argparse
        exits with 2 itself), 130 when interrupted.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from histmatch_ml import HistogramMatcher
    >>> from histmatch_ml.cli import main
    >>> refs = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    >>> path = HistogramMatcher().fit(refs).save(pathlib.Path(tempfile.mkdtemp()) / "m.npz")
    >>> main(["inspect", str(path)])  # doctest: +ELLIPSIS
    file         ...m.npz
    class        histmatch_ml.HistogramMatcher
    method       per_channel
    ...
    fingerprint  sha256:...
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    try:
        return int(args.func(args))
    except UsageError as exc:
        args.parser.error(str(exc))  # prints the usage and one line; exits with 2
    except (OSError, ValueError, TypeError) as exc:  # data errors: one line, no traceback
        print(f"histmatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("histmatch: interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - parser.error exits
