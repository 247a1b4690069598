"""Shared fixtures: real photos bundled with scikit-image (no network)."""

from __future__ import annotations

import contextlib
import io
import subprocess

import numpy as np
import pytest
from skimage import data

#: (source, reference) pairs of bundled RGB photos of different sizes
RGB_PAIRS = [("astronaut", "coffee"), ("chelsea", "rocket"), ("coffee", "astronaut")]
#: bundled greyscale photos
GREY = ["camera", "coins", "moon", "brick", "grass", "gravel"]


def load(name: str) -> np.ndarray:
    """A bundled scikit-image sample image by name."""
    return getattr(data, name)()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="session")
def coffee() -> np.ndarray:
    return data.coffee()


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    return data.camera()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture
def pool_sizes(monkeypatch):
    """``watch(module)``: the ``max_workers`` of every thread pool ``module`` makes, in a list.

    The module's ``ThreadPoolExecutor`` is replaced, for the test, by one that
    records its size and then runs as the real one.
    """
    from concurrent.futures import ThreadPoolExecutor

    sizes: list[int] = []

    class Recording(ThreadPoolExecutor):
        def __init__(self, max_workers=None, *args, **kwargs):
            sizes.append(max_workers)
            super().__init__(max_workers, *args, **kwargs)

    def watch(module) -> list[int]:
        monkeypatch.setattr(module, "ThreadPoolExecutor", Recording)
        return sizes

    return watch


def cli_in_process(*args) -> subprocess.CompletedProcess:
    """The command line run in this process (``main``): exit code, stdout and stderr."""
    from histmatch_ml.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
