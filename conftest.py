"""Collection rules for the whole repository (the suite, the modules' doctests, the docs).

The doctests of the dask backend and of the "Scaling out" page run a dask
cluster; without the ``[dask]`` extra they are left out, as the tests of
``tests/test_dask.py`` skip themselves.
"""

from importlib.util import find_spec

collect_ignore = []
if find_spec("dask") is None or find_spec("distributed") is None:
    collect_ignore += ["histmatch_ml/backends/dask.py", "docs/scaling.rst"]
