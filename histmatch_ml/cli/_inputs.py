"""Input discovery: files, directories read recursively and glob patterns, their outputs.

Every path found is accounted for: an input of its own, or a :class:`Skip`
with the reason (found twice, a link not followed). Walks never follow a link
back into a directory they are in, nor out of the tree unless asked.
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


class RunError(Exception):
    """A run that cannot go on (missing or invalid model, existing output): one line, exit 1."""


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


@dataclass(frozen=True)
class Skip:
    """A path the discovery found and did not take, and why (one line for the user).

    ``file`` tells an input file (counted as skipped in the summary) from a
    link to a directory that was not followed (a note: it holds no file of
    its own).
    """

    path: Path
    reason: str
    file: bool = True


def _inside(real: str, top_real: str) -> bool:
    try:
        return os.path.commonpath([real, top_real]) == top_real
    except ValueError:  # different drives
        return False


def _readable_name(name: str, extensions: frozenset[str]) -> bool:
    """True for a file name with an image suffix in ``extensions``, or a volume's (``.nii.gz``)."""
    from ..io._volume_files import is_volume_file

    return Path(name).suffix.lower() in extensions or is_volume_file(name)


def _walk(
    top: Path,
    extensions: frozenset[str],
    skips: list[Skip],
    *,
    follow_links: bool,
    max_depth: int | None = None,
) -> list[Path]:
    """Image files under ``top`` (hidden names skipped), in sorted order.

    A link to a directory is followed unless it leads back to a directory
    it is in (a loop: never followed) or out of ``top`` (followed only with
    ``follow_links``); a link to a file out of ``top`` is skipped without
    ``follow_links``. Each link not taken is added to ``skips``. Directories
    deeper than ``max_depth`` levels below ``top`` are not read.
    """
    top_real = os.path.realpath(top)
    found: list[Path] = []

    def visit(directory: Path, ancestors: frozenset[tuple[int, int]], depth: int) -> None:
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            skips.append(Skip(directory, f"cannot read the directory: {exc.strerror}", False))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = directory / entry.name
            link = entry.is_symlink()
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if max_depth is not None and depth >= max_depth:
                    continue
                try:
                    st = entry.stat()
                except OSError:
                    continue
                key = (st.st_dev, st.st_ino)
                if link:
                    real = os.path.realpath(path)
                    if key in ancestors:
                        reason = f"link to {real}, a directory it is in (a loop); not followed"
                        skips.append(Skip(path, reason, False))
                        continue
                    if not follow_links and not _inside(real, top_real):
                        reason = f"link to {real}, outside {top}; not followed (--follow-links)"
                        skips.append(Skip(path, reason, False))
                        continue
                visit(path, ancestors | {key}, depth + 1)
                continue
            if not _readable_name(entry.name, extensions):
                continue
            if not entry.is_file() and not (link and not os.path.exists(path)):
                continue  # a FIFO, socket or device: reading it could block
            if link and not follow_links:
                real = os.path.realpath(path)
                if not _inside(real, top_real):
                    reason = f"link to {real}, outside {top}; not read (pass --follow-links)"
                    skips.append(Skip(path, reason))
                    continue
            found.append(path)  # (a broken link is taken: reading it fails, and says so)

    try:
        st = os.stat(top)
        visit(top, frozenset({(st.st_dev, st.st_ino)}), 0)
    except OSError as exc:
        skips.append(Skip(top, f"cannot read the directory: {exc.strerror}", False))
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


def _match_parts(patterns: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    """Whether the path ``parts`` match the glob ``patterns`` (``**``: any number of parts)."""
    if not patterns:
        return not parts
    if patterns[0] == "**":
        return any(_match_parts(patterns[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and (
        fnmatch.fnmatchcase(parts[0], patterns[0]) and _match_parts(patterns[1:], parts[1:])
    )


def _glob(
    spec: str, root: Path, extensions: frozenset[str], skips: list[Skip], *, follow_links: bool
) -> list[Path]:
    """The image files matching the glob ``spec`` under its fixed ``root``.

    Matched on the walk of :func:`_walk` rather than with :func:`glob.glob`,
    which follows every link to a directory, loops included.
    """
    patterns = Path(spec).parts[len(root.parts) :] if root != Path(".") else Path(spec).parts
    depth = None if "**" in patterns else len(patterns) - 1
    walked: list[Skip] = []
    files = _walk(root, extensions, walked, follow_links=follow_links, max_depth=depth)
    found = [f for f in files if _match_parts(patterns, f.relative_to(root).parts)]
    # only the links the pattern would have picked up are worth a line
    skips.extend(
        s
        for s in walked
        if _match_parts(patterns, s.path.relative_to(root).parts)
        or (not s.file and "**" in patterns)
    )
    return found


def collect_inputs(
    specs: Iterable[str], *, follow_links: bool = False
) -> tuple[list[_Item], list[_Root], list[Skip]]:
    """Files named by ``specs`` (files, directories recursively, or globs), in order.

    Directories and globs yield the image files Pillow can read (hidden files
    and directories skipped; links handled as :func:`_walk` says); a file
    named explicitly is always taken, a link too. Every path found is an
    input of its own (a link and its target are two inputs), except one
    found a second time, which is skipped. Returns the inputs, the roots
    (for :func:`plan_outputs`) and the paths skipped, each with its reason.
    Raises :class:`UsageError` for a spec that matches nothing.
    """
    from ..io import image_extensions

    extensions = image_extensions()
    items: list[_Item] = []
    roots: list[_Root] = []
    skips: list[Skip] = []
    seen: dict[str, Path] = {}

    def add(path: Path, root: Path) -> None:
        # the path itself, not where its links lead: a link and its target are two inputs
        key = os.path.abspath(path)
        if key in seen:
            skips.append(Skip(path, f"listed more than once (first as {seen[key]})"))
            return
        seen[key] = path
        items.append(_Item(path, path.relative_to(root)))

    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            roots.append(_Root(path.resolve()))
            before = len(skips)
            files = _walk(path, extensions, skips, follow_links=follow_links)
            if not files and not any(s.file for s in skips[before:]):
                raise UsageError(f"no image files found in directory {spec}")
            for f in files:
                add(f, path)
        elif path.is_file() or (path.is_symlink() and not glob.has_magic(spec)):
            add(path, path.parent)
        elif glob.has_magic(spec):
            root = _glob_root(spec)
            roots.append(_Root(root.resolve(), os.path.abspath(spec)))
            before = len(skips)
            files = _glob(spec, root, extensions, skips, follow_links=follow_links)
            if not files and not any(s.file for s in skips[before:]):
                raise UsageError(f"no image files match {spec}")
            for f in files:
                add(f, root)
        else:
            raise UsageError(f"input not found: {spec}")
    return items, roots, skips


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
    items: list[_Item],
    roots: list[_Root],
    out_dir: Path,
    *,
    overwrite: bool,
    skip_existing: bool = False,
) -> list[Path]:
    """Output path of every input under ``out_dir``, after every safety check.

    Raises :class:`UsageError` if ``out_dir`` lies inside an input directory
    (or where an input glob would pick the outputs up), if an output would
    be an input file, or if two inputs map to one output; raises
    :class:`RunError` if outputs exist and neither ``overwrite`` nor
    ``skip_existing`` is set (the caller skips the existing ones then).
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
    if not overwrite and not skip_existing:
        existing = [out for out in outputs if out.exists()]
        if existing:
            raise RunError(
                f"{len(existing)} output file(s) exist already (first: {existing[0]}); "
                f"pass --skip-existing to finish an interrupted run, or --overwrite to "
                f"replace them"
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
            if p.is_file() and p.stem == rel.stem and _readable_name(p.name, exts)
        )
        if folder.is_dir()
        else []
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(f"no mask {exact} (nor {rel.stem}.* in {folder})")
    raise ValueError(f"ambiguous masks for {rel}: {', '.join(map(str, candidates))}")
