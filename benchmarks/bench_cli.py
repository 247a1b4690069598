"""``histmatch transform`` over a directory of 200 512x512 PNGs: ``--jobs 2`` vs ``--jobs 1``.

Each run is the real command line in a fresh process (start-up, model load,
PNG decode, matching, PNG encode, atomic write with fsync), so the times are
what a user waits for. The peer is what users write without this package: a
Python loop with Pillow and ``skimage.exposure.match_histograms`` against one
reference image, in one process, writing PNGs at the same zlib level (1, the
CLI's default ``--png-compression``). Run::

    python benchmarks/bench_cli.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _harness import Table, interleaved_medians, machine
from PIL import Image
from skimage import data

N_IMAGES = 200
SIZE = 512

_PEER = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from skimage.exposure import match_histograms
src, ref, out = map(Path, sys.argv[1:4])
reference = np.asarray(Image.open(ref))
for path in sorted(src.glob("*.png")):
    matched = match_histograms(np.asarray(Image.open(path)), reference, channel_axis=-1)
    Image.fromarray(matched.astype(np.uint8)).save(out / path.name, compress_level=1)
"""


def make_inputs(directory: Path) -> None:
    """200 distinct 512x512 RGB PNGs: crops, flips and tints of bundled photos."""
    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    for i in range(N_IMAGES):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        y, x = rng.integers(0, max(h - SIZE, 0) + 1), rng.integers(0, max(w - SIZE, 0) + 1)
        crop = np.asarray(
            Image.fromarray(photo[y : y + SIZE, x : x + SIZE]).resize((SIZE, SIZE)), np.float32
        )
        tint = rng.uniform(0.6, 1.2, size=3).astype(np.float32)
        image = np.clip(crop * tint, 0, 255).astype(np.uint8)
        if i % 2:
            image = image[:, ::-1]
        Image.fromarray(np.ascontiguousarray(image)).save(directory / f"img_{i:03d}.png")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        inputs, outputs = tmp / "inputs", tmp / "outputs"
        inputs.mkdir()
        make_inputs(inputs)
        Image.fromarray(data.coffee()).save(tmp / "coffee.png")
        cli = [sys.executable, "-m", "histmatch_ml"]
        model = tmp / "coffee.npz"
        subprocess.run([*cli, "fit", tmp / "coffee.png", "-o", model], check=True)
        for name in ("jobs1", "jobs2", "peer"):
            (outputs / name).mkdir(parents=True)

        def transform(jobs: int):
            cmd = [*cli, "transform", "-m", model, inputs, "-o", outputs / f"jobs{jobs}"]
            cmd += ["--jobs", str(jobs), "--overwrite"]
            return lambda: subprocess.run(cmd, check=True, capture_output=True)

        def peer():
            cmd = [sys.executable, "-c", _PEER, inputs, tmp / "coffee.png", outputs / "peer"]
            subprocess.run(cmd, check=True, capture_output=True)

        times = interleaved_medians(
            {"jobs1": transform(1), "jobs2": transform(2), "peer": peer}, repeat=3, warmup=1
        )
        same = all(
            (outputs / "jobs1" / p.name).read_bytes() == p.read_bytes()
            for p in (outputs / "jobs2").iterdir()
        )
    table = Table("case", "--jobs 1", "--jobs 2", "skimage loop (1 process)")
    table.row(
        f"transform {N_IMAGES} PNGs {SIZE}x{SIZE} RGB",
        times["jobs1"],
        times["jobs2"],
        times["peer"],
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{machine()}; load average {load:.1f}; medians of 3 interleaved runs after 1 warm-up")
    print(table.markdown(ratio=("--jobs 1", "--jobs 2")))
    print(f"per image: --jobs 1 {times['jobs1'] / N_IMAGES * 1e3:.1f} ms, "
          f"--jobs 2 {times['jobs2'] / N_IMAGES * 1e3:.1f} ms; "
          f"outputs of --jobs 1 and --jobs 2 byte-identical: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
