"""Atomic file writes: a file appears whole or not at all.

:func:`atomic_write` writes to a temporary file in the destination directory,
``fsync``-s it, then moves it into place with ``os.replace`` (or, when the
destination must not be clobbered, a hard link), so an interrupted run never
leaves a half-written or temporary file behind. Model files and image files
are both written through it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_write(path: PathLike, *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; move it into place on success.

    The temporary file lives in the destination directory (so the final
    ``os.replace`` is atomic), is flushed and ``fsync``-ed, and is removed if
    anything fails, ``KeyboardInterrupt`` included. With ``overwrite=False``
    the file is linked into place, which fails if ``path`` appeared meanwhile.

    Parameters
    ----------
    path : str or os.PathLike
        The file to create or replace. Its directory must exist.
    overwrite : bool, default=True
        Replace an existing file; otherwise raise ``FileExistsError``.

    Yields
    ------
    file : binary file object
        Write the content to it.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from histmatch_ml.io import atomic_write
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.bin"
    >>> with atomic_write(target) as fh:
    ...     _ = fh.write(b"done")
    >>> target.read_bytes(), sorted(p.name for p in target.parent.iterdir())
    (b'done', ['out.bin'])
    """
    path = Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"{path} exists; refusing to overwrite it")
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic no-clobber
            except FileExistsError:
                raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
            except OSError:  # no hard links on this file system
                if path.exists():
                    raise FileExistsError(f"{path} exists; refusing to overwrite it") from None
                os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
