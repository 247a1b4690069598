"""The ``histmatch`` argument parser, with matcher options generated from the declarations.

Every parameter of :class:`~histmatch_ml.HistogramMatcher` is declared once, as a
:class:`~histmatch_ml.methods.Param`, by the estimator or by the method that
reads it. :func:`add_matcher_options` turns each declaration into an option, so
a method registered in a module of its own gets its options here with no
change to this file. The declarations' constraints are scikit-learn's, so
building the parser imports scikit-learn; ``histmatch --version`` is answered
before the parser is built (see :func:`histmatch_ml.cli.main`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Collection
from numbers import Integral, Real
from typing import Any, NamedTuple

from .. import __version__
from ._commands import _demo, _fit, _inspect, _match, _transform

#: what ``histmatch --version`` prints
VERSION = f"histmatch_ml {__version__}"

#: estimator parameters with no option: ``n_jobs`` sets threads within one process
#: (``transform`` has ``--jobs`` for worker processes instead), and the command line
#: shows its own progress bar (``verbose``)
_NOT_OPTIONS = frozenset({"n_jobs", "verbose"})

#: command line defaults that differ from the estimator's: a run is reproducible as is
_DEFAULTS = {"random_state": 0}

#: the largest seed ``numpy.random.RandomState`` accepts
_MAX_SEED = 2**32 - 1


# ------------------------------------------------------------------- value types
def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range_text(lo: Any, hi: Any, closed: str = "both") -> str:
    """``"in [lo, hi]"``, ``">= lo"``, ... for the bounds of a range (None: unbounded)."""
    if lo is not None and hi is not None:
        left = "[" if closed in ("left", "both") else "("
        right = "]" if closed in ("right", "both") else ")"
        return f"in {left}{_number(lo)}, {_number(hi)}{right}"
    if lo is not None:
        return (">= " if closed in ("left", "both") else "> ") + _number(lo)
    if hi is not None:
        return ("<= " if closed in ("right", "both") else "< ") + _number(hi)
    return ""


def _int_in(lo: int | None, hi: int | None) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (a None bound is no bound)."""
    bounds = _range_text(lo, hi)

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            kind = f"an integer {bounds}" if bounds else "an integer"
            raise argparse.ArgumentTypeError(f"must be {kind}; got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {bounds}; got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer ``>= minimum``."""
    return _int_in(minimum, None)


def _float_in(lo: float | None, hi: float | None, closed: str = "both") -> Callable[[str], float]:
    """An argparse type: a number in the range from ``lo`` to ``hi``, ends as ``closed``."""
    bounds = _range_text(lo, hi, closed)
    lo_in, hi_in = closed in ("left", "both"), closed in ("right", "both")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            kind = f"a number {bounds}" if bounds else "a number"
            raise argparse.ArgumentTypeError(f"must be {kind}; got {text!r}") from None
        above = lo is None or (value >= lo if lo_in else value > lo)
        below = hi is None or (value <= hi if hi_in else value < hi)
        if not (above and below):  # (NaN is in no bounded range)
            raise argparse.ArgumentTypeError(f"must be {bounds}; got {text}")
        return value

    parse.__name__ = "float"
    return parse


def _numbers(text: str) -> tuple[float, ...]:
    """An argparse type: numbers separated by commas, as a tuple (for array-like parameters)."""
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be numbers separated by commas; got {text!r}"
        ) from None


_numbers.__name__ = "numbers"


def _one_of(options: Collection[str]) -> Callable[[str], str]:
    """An argparse type: one of ``options`` (for a string option within a union)."""

    def parse(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(f"must be one of {', '.join(options)}; got {text!r}")
        return text

    parse.__name__ = "str"
    return parse


def _any_of(parsers: list[Callable[[str], Any]], kinds: list[str]) -> Callable[[str], Any]:
    """An argparse type: the first of ``parsers`` that accepts the text."""

    def parse(text: str) -> Any:
        for parser in parsers:
            try:
                return parser(text)
            except argparse.ArgumentTypeError:
                continue
        raise argparse.ArgumentTypeError(f"must be {' or '.join(kinds)}; got {text!r}")

    return parse


class _Value(NamedTuple):
    """How the command line reads the values one scikit-learn constraint allows."""

    parse: Callable[[str], Any]
    kind: str  # what it accepts, for the help and the error
    metavar: str | None = None  # None: the parameter's name in capitals
    choices: list[str] | None = None  # for string options


def _value_type(constraint: Any) -> _Value | None:
    """How to read a value meeting ``constraint``, or None.

    None for the constraints a command line value cannot meet (``None``,
    instances of other classes); the estimator still checks every value.
    """
    from sklearn.utils._param_validation import Interval, StrOptions

    if isinstance(constraint, Interval):
        lo, hi, closed = constraint.left, constraint.right, constraint.closed
        if constraint.type is Integral:
            # an open end of an integer range is the next integer in
            lo = None if lo is None else int(lo) + (closed in ("right", "neither"))
            hi = None if hi is None else int(hi) - (closed in ("left", "neither"))
            return _Value(_int_in(lo, hi), f"an integer {_range_text(lo, hi)}".rstrip(), "N")
        if constraint.type is Real or constraint.type == "real_not_int":
            kind = f"a number {_range_text(lo, hi, closed)}".rstrip()
            return _Value(_float_in(lo, hi, closed), kind)
    if isinstance(constraint, StrOptions):
        options = sorted(constraint.options)
        return _Value(_one_of(options), f"one of {', '.join(options)}", choices=options)
    if constraint == "random_state":
        return _Value(_int_in(0, _MAX_SEED), f"a seed {_range_text(0, _MAX_SEED)}", "SEED")
    if constraint is int:
        return _Value(_int_in(None, None), "an integer", "N")
    if constraint is float:
        return _Value(_float_in(None, None), "a number")
    if constraint is str:
        return _Value(str, "a string")
    if constraint == "array-like":
        return _Value(_numbers, "numbers separated by commas", "X,Y,...")
    return None


# ---------------------------------------------------------------- matcher options
def _plain(doc: str) -> str:
    """A docstring line as help text: no reST literals, ``%`` kept from argparse."""
    return doc.replace("``", "").replace("%", "%%")


def _method_summaries() -> list[tuple[str, str]]:
    """``(name, one-line summary)`` of every registered method, in registration order."""
    from ..methods import available_methods, get_method

    return [(name, get_method(name).summary) for name in available_methods()]


def _option(param: Any, methods: list[str] | None) -> tuple[str, dict[str, Any]]:
    """The flag and the ``add_argument`` keywords of one parameter declaration."""
    flag = "--" + param.name.replace("_", "-")
    default = _DEFAULTS.get(param.name, param.default)
    if param.name == "method":
        summaries = _method_summaries()
        listing = ", ".join(f"{name} ({summary})" for name, summary in summaries)
        return flag, {
            "choices": [name for name, _ in summaries],
            "default": default,
            "help": _plain(f"The matching method (default: {default}): {listing}."),
        }
    doc = _plain(param.doc)
    if methods is not None:
        doc += " Used by method=" + ", ".join(methods) + "."
    if "boolean" in param.constraint or bool in param.constraint:
        return flag, {
            "action": argparse.BooleanOptionalAction,
            "default": default,
            "help": f"{doc} (default: %(default)s)",
        }
    values = [v for v in map(_value_type, param.constraint) if v is not None]
    if len(values) == 1 and values[0].choices is not None:  # a string option alone
        return flag, {
            "choices": values[0].choices,
            "default": default,
            "help": f"{doc} (default: %(default)s)",
        }
    if not values:  # any text; the estimator checks it when it fits
        value = _Value(str, "")
    elif len(values) == 1:
        value = values[0]
    else:
        kinds = [v.kind for v in values]
        value = _Value(_any_of([v.parse for v in values], kinds), " or ".join(kinds))
    kind = f"{_plain(value.kind)}; " if value.kind else ""
    return flag, {
        "type": value.parse,
        "metavar": value.metavar or param.name.upper(),
        "default": default,
        "help": f"{doc} ({kind}default: %(default)s)",
    }


def add_matcher_options(parser: argparse.ArgumentParser, *, exclude: Collection[str] = ()) -> None:
    """Add an option to ``parser`` for every parameter of the estimator, from its declaration.

    The declarations are :func:`histmatch_ml.matcher.estimator_params`. Each
    parameter ``name`` becomes ``--name-with-dashes`` (its value under
    ``args.name``), its help the declaration's one-line doc, the methods that
    read it and the default. The value type follows the scikit-learn
    constraint: ``StrOptions`` gives choices (sorted), ``Interval`` an integer
    or a number checked against the bounds, ``"boolean"`` a
    ``--name/--no-name`` pair, ``"random_state"`` an integer seed; a union of
    constraints accepts what any of them does. ``method`` lists every
    registered method with its summary. ``n_jobs`` and the names in
    ``exclude`` get no option. The defaults are the estimator's, except
    ``--random-state 0``.

    Examples
    --------
    >>> import argparse
    >>> from histmatch_ml.cli._parser import add_matcher_options
    >>> parser = argparse.ArgumentParser()
    >>> add_matcher_options(parser, exclude={"random_state"})
    >>> args = parser.parse_args(["--method", "lab", "--n-iter", "3", "--regrain"])
    >>> args.method, args.n_iter, args.regrain, args.lab_mode
    ('lab', 3, True, 'joint')
    >>> hasattr(args, "n_jobs") or hasattr(args, "random_state")
    False
    """
    from ..matcher import estimator_params

    group = parser.add_argument_group(
        "matcher options", "the parameters of HistogramMatcher, as in the Python API"
    )
    added = []
    for name, (param, methods) in estimator_params().items():
        if name in _NOT_OPTIONS or name in exclude:
            continue
        added.append(name)
        flag, kwargs = _option(param, methods)
        action = group.add_argument(flag, **kwargs)
        # (some Pythons' BooleanOptionalAction appends the default to the help itself)
        action.help = kwargs["help"]
    # which attributes of the parsed arguments are matcher parameters (a command's own
    # arguments may share a name with one, as match's REFERENCE does)
    parser.set_defaults(matcher_params=tuple(added))


# ------------------------------------------------------------------------ parser
def _epilog() -> str:
    """What each method is for, one line each, for ``histmatch --help``."""
    summaries = _method_summaries()
    width = max(len(name) for name, _ in summaries)
    lines = [f"  {name:<{width}}  {summary}" for name, summary in summaries]
    return (
        "methods (--method of fit, match and demo):\n"
        + "\n".join(lines)
        + "\n\nRun 'histmatch COMMAND --help' for the options of a command."
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``histmatch`` argument parser (one sub-command per workflow).

    The matcher options are generated from the parameter declarations
    (:func:`add_matcher_options`), which imports scikit-learn.
    """
    from ..matcher import estimator_params

    params = list(estimator_params())

    def all_but(*names: str) -> list[str]:
        return [name for name in params if name not in names]

    parser = argparse.ArgumentParser(
        prog="histmatch",
        description="Histogram matching for images and datasets.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=VERSION, help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, func: Callable, help: str, description: str, examples: str):
        p = sub.add_parser(
            name,
            help=help,
            description=description,
            epilog="examples:\n" + examples,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func, parser=p)
        return p

    def mode(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--mode",
            choices=("keep", "RGB", "L", "RGBA"),
            default="keep",
            help="convert every image on read to 8-bit RGB, grey (L) or RGBA, for folders "
            "of mixed images; keep (default) matches each as it is (16-bit stays 16-bit)",
        )

    def follow_links(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--follow-links",
            action="store_true",
            help="follow symbolic links that lead out of an input directory (links that "
            "loop back are never followed)",
        )

    def png_compression(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--png-compression",
            type=_int_at_least(0),
            choices=range(10),
            default=1,
            metavar="0-9",
            help="zlib level of PNG outputs (default 1: fast; 6 is Pillow's default, "
            "smaller files, slower to write)",
        )

    def max_pixels(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--max-pixels",
            type=_int_at_least(1),
            metavar="N",
            help="refuse images with more pixels (Pillow's decompression-bomb limit "
            "always applies too)",
        )

    def scheduler(p: argparse.ArgumentParser, work: str) -> None:
        p.add_argument(
            "--scheduler",
            metavar="ADDRESS",
            help=f"{work} on a dask cluster: the address of a running distributed "
            "scheduler (tcp://host:8786), or 'local' / 'local:N' to start one with a worker "
            "process per core / N of them (needs the [dask] extra; paths must be readable "
            "by the workers)",
        )

    demo = command(
        "demo",
        _demo,
        "match two bundled sample images and write the result",
        "Match scikit-image's astronaut to its coffee photo; write PNGs and a figure.",
        "  histmatch demo\n  histmatch demo -o demo_lab --method lab\n",
    )
    demo.add_argument(
        "-o",
        "--output",
        default="histmatch_demo",
        metavar="DIR",
        help="output directory (default: %(default)s)",
    )
    add_matcher_options(demo, exclude=all_but("method"))

    match = command(
        "match",
        _match,
        "match one image to one reference image",
        "Match SOURCE to REFERENCE and write OUT; the format follows OUT's suffix and "
        "16-bit PNG/TIFF stay 16-bit.",
        "  histmatch match photo.jpg reference.jpg -o matched.jpg\n"
        "  histmatch match scan16.tif ref16.tif -o out.tif --method exact\n"
        "  histmatch match a.png b.png -o out.png --method lab --overwrite\n",
    )
    match.add_argument("source", help="image to match")
    match.add_argument("reference", help="reference image")
    match.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output image (its suffix sets the format)",
    )
    match.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    png_compression(match)
    max_pixels(match)
    # (one reference: pooled and barycentre are the same, and REFERENCE names the file)
    add_matcher_options(match, exclude={"reference"})

    fit = command(
        "fit",
        _fit,
        "learn a reference from a set of images and save the model",
        "Learn the pooled reference distribution of REFS (files, directories read "
        "recursively, or glob patterns) and save it as an .npz model file. Every "
        "reference is read and checked first; no model is written when one fails "
        "(unless --keep-going) or when they mix grey and colour, or bit depths "
        "(unless --mode converts them).",
        "  histmatch fit refs/ -o model.npz\n"
        "  histmatch fit 'refs/**/*.png' -o model.npz --mode RGB --method exact\n"
        "  histmatch fit refs/ -o model.npz --mask-dir masks/ --keep-going\n"
        "  histmatch fit refs/ -o model.npz --scheduler local:4\n",
    )
    fit.add_argument("references", nargs="+", metavar="REFS", help="files, directories, globs")
    fit.add_argument(
        "-o", "--output", required=True, metavar="MODEL.npz", help="model file to write"
    )
    fit.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="masks mirroring the references' layout (same relative path, any image "
        "suffix); non-zero pixels are counted",
    )
    fit.add_argument("--overwrite", action="store_true", help="replace MODEL if it exists")
    fit.add_argument("--fail-fast", action="store_true", help="stop at the first bad file")
    fit.add_argument(
        "--keep-going",
        action="store_true",
        help="write the model from the references that could be read when some fail "
        "(the summary names those left out; the exit status is still 1)",
    )
    mode(fit)
    follow_links(fit)
    max_pixels(fit)
    scheduler(fit, "read the references and learn from them")
    add_matcher_options(fit)

    transform = command(
        "transform",
        _transform,
        "match many images to a saved model",
        "Match INPUTS (files, directories read recursively, or glob patterns) to the "
        "model and write them under OUTDIR with the same relative paths and formats.",
        "  histmatch transform -m model.npz photos/ -o matched/ --jobs 4\n"
        "  histmatch transform -m model.npz 'photos/**/*.jpg' -o matched/ --mode RGB\n"
        "  histmatch transform -m model.npz photos/ -o matched/ --skip-existing  # resume\n"
        "  histmatch transform -m model.npz photos/ -o matched/ --scheduler tcp://host:8786\n",
    )
    transform.add_argument(
        "-m", "--model", required=True, metavar="MODEL.npz", help="model file (from fit)"
    )
    transform.add_argument("inputs", nargs="+", metavar="INPUTS", help="files, dirs, globs")
    transform.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUTDIR",
        help="output directory (outside the inputs); the inputs' layout is kept",
    )
    transform.add_argument(
        "-j",
        "--jobs",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="worker processes (default: all cores)",
    )
    flag, strength = _option(*estimator_params()["strength"])
    strength["help"] = "override the model's strength. " + strength["help"].replace(
        "default: %(default)s", "default: the model's"
    )
    strength["default"] = None
    transform.add_argument(flag, **strength)
    transform.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="masks mirroring the inputs' layout; only non-zero pixels are changed",
    )
    transform.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    transform.add_argument(
        "--skip-existing",
        action="store_true",
        help="leave existing outputs as they are and write the others: finishes an "
        "interrupted run (outputs are written atomically, so one that exists is whole)",
    )
    transform.add_argument("--fail-fast", action="store_true", help="stop at the first bad file")
    mode(transform)
    follow_links(transform)
    png_compression(transform)
    max_pixels(transform)
    scheduler(transform, "read, match and write the files")

    inspect = command(
        "inspect",
        _inspect,
        "print what a model file holds",
        "Check a model file and print its method, parameters, dtype, channels, images "
        "seen and fingerprint.",
        "  histmatch inspect model.npz\n  histmatch inspect model.npz --json\n",
    )
    inspect.add_argument("model", metavar="MODEL.npz", help="model file to check and describe")
    inspect.add_argument("--json", action="store_true", help="print JSON")
    return parser
