"""Input discovery: files, directories read recursively and glob patterns, their outputs.

Every check that keeps a run from reading its own outputs or writing over an
input is made here, before anything is written.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class UsageError(Exception):
    """A bad argument: reported as one line plus the usage, exit status 2."""


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
    from ..io import image_extensions

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
    from ..io import image_extensions

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
