"""Sphinx configuration of the histmatch_ml documentation.

Builds offline (no intersphinx, no remote images) with warnings as errors::

    python -m sphinx -W -b html docs docs/_build/html

Pictures are drawn at build time by ``.. plot::`` directives
(:mod:`matplotlib.sphinxext.plot_directive`) that call the package's own
plotting helpers on scikit-image's bundled photos. The ``histmatch --help``
texts shown on the command-line page are generated from the real parser.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from sphinx.util import logging

import histmatch_ml

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent
GENERATED = DOCS / "_generated"

# -- project -----------------------------------------------------------------
project = "histmatch_ml"
author = "histmatch_ml developers"
copyright = "histmatch_ml developers, BSD-3-Clause"
version = release = histmatch_ml.__version__

# -- general -----------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "matplotlib.sphinxext.plot_directive",
    "myst_parser",
]
source_suffix = {".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "**.ipynb_checkpoints"]
templates_path = ["_templates"]
default_role = "py:obj"
nitpicky = False
# the included benchmarks/README.md starts its sections at level 2
suppress_warnings = ["myst.header"]

# -- API reference -----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- pictures generated at build time ------------------------------------------
plot_include_source = True
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 90)]
plot_rcparams = {"figure.dpi": 90, "savefig.bbox": "tight"}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- HTML ----------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"histmatch_ml {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
html_copy_source = False


# -- generated inputs ------------------------------------------------------------
def _help_texts() -> str:
    """``histmatch --help`` and ``histmatch COMMAND --help`` from the real parser."""
    from histmatch_ml.cli import build_parser

    def render(argv: list[str]) -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            build_parser().parse_args(argv)
        return out.getvalue().rstrip()

    parser = build_parser()
    commands = [
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    ]
    blocks = ["$ histmatch --help", render(["--help"])]
    for name in commands:
        blocks += ["", f"$ histmatch {name} --help", render([name, "--help"])]
    return "\n".join(blocks) + "\n"


def _public_names() -> dict[str, list[str]]:
    """Public names of the documented modules, to check api.rst lists them all."""
    import importlib

    names = {"histmatch_ml": [n for n in histmatch_ml.__all__ if n != "__version__"]}
    for module_name in ("histmatch_ml.metrics", "histmatch_ml.plotting"):
        module = importlib.import_module(module_name)
        names[module_name] = getattr(module, "__all__", None) or [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and callable(obj)
            and getattr(obj, "__module__", None) == module_name
        ]
    return names


def _write_generated(app) -> None:
    GENERATED.mkdir(exist_ok=True)
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "90"
    try:
        text = _help_texts()
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous
    target = GENERATED / "cli_help.txt"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)

    # api.rst lists names relative to ``.. currentmodule:: histmatch_ml``
    api = (DOCS / "api.rst").read_text()
    listed = set(re.findall(r"^\s{3}([\w.]+)\s*$", api, flags=re.MULTILINE))
    missing = [
        ".".join([*module.split(".")[1:], name])
        for module, names in _public_names().items()
        for name in names
        if ".".join([*module.split(".")[1:], name]) not in listed
    ]
    if missing:
        logger.warning(
            "docs/api.rst does not list these public names (add them to an autosummary block): %s",
            ", ".join(sorted(missing)),
        )


def _skip_member(app, what, name, obj, skip, options):
    """Hide scikit-learn's generated metadata-routing setters (``set_*_request``)."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def setup(app):
    app.connect("builder-inited", _write_generated)
    app.connect("autodoc-skip-member", _skip_member)
