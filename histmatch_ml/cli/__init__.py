"""The ``histmatch`` command line (also ``python -m histmatch_ml``).

Commands::

    histmatch match SOURCE REFERENCE -o OUT [--method M] [matcher options]
    histmatch fit REFS... -o MODEL.npz [--method M] [matcher options] [--mode MODE]
    histmatch transform -m MODEL.npz INPUTS... -o OUTDIR [--jobs N] [--skip-existing]
    histmatch inspect MODEL.npz
    histmatch demo [-o DIR] [--method M]

The matcher options are the parameters of :class:`~histmatch_ml.HistogramMatcher`
(``--n-quantiles``, ``--ordering``, ...), generated from their declarations.
Inputs are files, directories (read recursively) or glob patterns. Nothing is
ever written over an input; existing outputs are replaced only with
``--overwrite``; every write is atomic. A file that cannot be read is reported
by path on stderr and skipped, the others are still processed, and the exit
status is 1 at the end (``--fail-fast`` stops at the first, and so does a full
disk). Bad arguments exit with status 2, a one-line error and the usage;
errors of the run itself (a missing or invalid model, an existing output)
with status 1 and one line. Every input found is accounted for: written,
skipped with a line saying why (found twice, a link not followed: walks never
follow a link loop, nor a link out of the tree without ``--follow-links``),
or failed (named in the summary). ``--mode`` converts every image on read,
and ``fit`` refuses references of mixed kinds without it. Ctrl-C stops
``transform`` once the files in progress are written (exit status 130, with
the count of files written; ``--skip-existing`` finishes the run); a run killed outright leaves at
most temporary ``.histmatch-tmp-<pid>-<random>`` files, which the next run on
the same output removes, and its worker processes end with it. No output is
written through a symbolic link that leads out of the output directory.

The package is split by job: ``_inputs`` finds the input files and plans the
outputs, ``_runner`` matches files over a process pool, ``_commands`` holds
the commands and ``_parser`` the argument parser.
"""

from __future__ import annotations

import sys

import numpy as np

from ._inputs import RunError, UsageError
from ._parser import VERSION, build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``histmatch`` console script.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    status : int
        0 on success, 1 if any file failed or the run could not go on, 2 for
        bad arguments (argparse exits with 2 itself), 130 when interrupted.

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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--version"]:
        # answered before the parser is built: its matcher options are read from the
        # parameter declarations, which loads scikit-learn
        print(VERSION)
        return 0
    parser = build_parser()
    args = parser.parse_args(argv)
    np.seterr(all="ignore")
    try:
        return int(args.func(args))
    except UsageError as exc:
        args.parser.error(str(exc))  # prints the usage and one line; exits with 2
    except RunError as exc:  # not a bad option: one line, no usage
        print(f"histmatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError) as exc:  # data errors: one line, no traceback
        print(f"histmatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("histmatch: interrupted", file=sys.stderr)
        return 130
    return 2  # pragma: no cover - parser.error exits
