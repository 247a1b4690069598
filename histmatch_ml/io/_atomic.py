"""Atomic file writes: a file appears whole or not at all.

:func:`atomic_write` writes to a temporary file in the destination directory,
``fsync``-s it, then moves it into place with ``os.replace`` (or, when the
destination must not be clobbered, a hard link). Model files and image files
are both written through it.

The temporary file is named ``.histmatch-tmp-<pid>-<12 hex digits>`` after the
process writing it. It is removed when the write fails, ``KeyboardInterrupt``
included; a process killed outright (``SIGKILL``, power loss) cannot remove
it, so the commands that write call :func:`remove_stale_temp_files` on their
output first: it removes the files with exactly that name whose writer is no
longer running.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PathLike = str | os.PathLike

#: start of the name of every temporary file :func:`atomic_write` creates
TEMP_PREFIX = ".histmatch-tmp-"
#: the whole name: the writer's process id (no leading zero) and 6 random bytes in hex
_TEMP_NAME = re.compile(r"\.histmatch-tmp-([1-9][0-9]{0,9})-([0-9a-f]{12})")


def temp_file_owner(name: str) -> int | None:
    """The process id in the name of a temporary file of :func:`atomic_write`.

    Parameters
    ----------
    name : str
        A file name (not a path).

    Returns
    -------
    pid : int or None
        The id of the process that created the file, or None if ``name`` is
        not exactly ``.histmatch-tmp-<pid>-<12 lower-case hex digits>``.

    Examples
    --------
    >>> from histmatch_ml.io._atomic import temp_file_owner
    >>> temp_file_owner(".histmatch-tmp-4242-0123456789ab")
    4242
    >>> temp_file_owner(".histmatch-tmp-4242-0123456789ab.png") is None
    True
    """
    match = _TEMP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def process_running(pid: int) -> bool:
    """Whether process ``pid`` may still be running: True unless it has surely ended.

    A zombie (ended, not yet reaped) counts as ended. Where no safe test
    exists (not POSIX) the answer is True.

    Parameters
    ----------
    pid : int
        A process id, > 0.

    Returns
    -------
    running : bool

    Examples
    --------
    >>> import os
    >>> from histmatch_ml.io._atomic import process_running
    >>> process_running(os.getpid())
    True
    """
    if os.name != "posix":
        return True  # no liveness test here that cannot also end the process: keep the file
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process, or not a pid this system can have: keep the file
    try:  # a zombie has exited and writes nothing more, though its pid still answers
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rpartition(b")")[2].split()[:1]
    except OSError:
        return True
    return state not in ([b"Z"], [b"X"])


def remove_stale_temp_files(directory: PathLike, *, recursive: bool = True) -> list[Path]:
    """Remove the temporary files that killed writers left in ``directory``.

    A file is removed only if all of these hold: its name is exactly
    ``.histmatch-tmp-<pid>-<12 hex digits>`` (see :func:`temp_file_owner`);
    it is a regular file (not a symbolic link, not a directory); the process
    ``<pid>`` is not running on this machine (a zombie counts as not
    running); and it was last modified before this call began, so a write
    that starts meanwhile is never touched. A file whose writer's pid has
    been taken by another process is kept until a later call. Symbolic links
    to directories are not followed. Files that cannot be removed are left.

    Parameters
    ----------
    directory : str or os.PathLike
        Where to look; nothing happens if it is not a directory.
    recursive : bool, default=True
        Look in every subdirectory too.

    Returns
    -------
    removed : list of pathlib.Path
        The files removed.

    Examples
    --------
    >>> import os, subprocess, sys, tempfile, pathlib
    >>> from histmatch_ml.io._atomic import remove_stale_temp_files
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> writer = subprocess.Popen([sys.executable, "-c", "pass"])
    >>> writer.wait()  # its pid now belongs to no process
    0
    >>> for owner in (writer.pid, os.getpid()):
    ...     _ = (folder / f".histmatch-tmp-{owner}-0123456789ab").write_bytes(b"partial")
    >>> _ = (folder / f".histmatch-tmp-{writer.pid}-0123456789ab.png").write_bytes(b"other")
    >>> removed = remove_stale_temp_files(folder)
    >>> [p.name for p in removed] == [f".histmatch-tmp-{writer.pid}-0123456789ab"]
    True
    >>> len(list(folder.iterdir()))  # the live writer's file and the other name are kept
    2
    """
    started = time.time()
    root = Path(directory)
    if not root.is_dir():
        return []
    if recursive:
        walk: Iterator[tuple[str, list[str], list[str]]] = os.walk(root)
    else:
        walk = iter([(os.fspath(root), [], os.listdir(root))])
    removed = []
    for dirpath, _, filenames in walk:
        for name in filenames:
            owner = temp_file_owner(name)
            if owner is None:
                continue
            path = Path(dirpath) / name
            try:
                info = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= started:
                continue
            if process_running(owner):
                continue
            try:
                os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_write(path: PathLike, *, overwrite: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path``; move it into place on success.

    The temporary file lives in the destination directory (so the final
    ``os.replace`` is atomic), is named ``.histmatch-tmp-<pid>-<random>``
    (so that :func:`remove_stale_temp_files` can recognise it if this process
    is killed), is flushed and ``fsync``-ed, and is removed if anything
    fails, ``KeyboardInterrupt`` included. With ``overwrite=False`` the file
    is linked into place, which fails if ``path`` appeared meanwhile.

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
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(6)}"
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
