"""The demo command: the main job on bundled sample images."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image


def test_demo_writes_images_and_figure(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "histmatch_ml", "demo", "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        env={"MPLBACKEND": "Agg", "PATH": "", "PYTHONPATH": ":".join(sys.path)},
    )
    assert "wrote" in result.stdout
    for name in ("source", "reference", "matched", "matching"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    matched = np.asarray(Image.open(tmp_path / "matched.png"))
    source = np.asarray(Image.open(tmp_path / "source.png"))
    assert matched.shape == source.shape == (512, 512, 3)
    assert not np.array_equal(matched, source)
