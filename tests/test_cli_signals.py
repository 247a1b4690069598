"""``histmatch transform`` killed or interrupted mid-run, for real.

Each test starts the real command line as a subprocess in a process group of
its own, waits until it has written some outputs, then signals it: the whole
group with ``SIGKILL`` or ``SIGINT``, or the main process alone with
``SIGKILL``. Afterwards no process of the group may be left, every output
present must be whole, the only leftovers may be temporary files the next run
recognises (and removes), and the inputs are unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX signals and process groups")

#: images in the input folder, and their side: enough work that a kill lands mid-run
N_IMAGES, SIDE = 48, 384
#: a temporary file of histmatch_ml.io.atomic_write: ``.histmatch-tmp-<pid>-<random>``
TEMP_NAME = re.compile(r"\.histmatch-tmp-([1-9][0-9]*)-[0-9a-f]{12}")
PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


def histmatch(*args: object) -> list[str]:
    return [sys.executable, "-m", "histmatch_ml", *map(str, args)]


def digests(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def hidden_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob(".*"))


def outputs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*.png") if not p.name.startswith("."))


def assert_whole(paths: list[Path]) -> None:
    """Every output decodes completely: none is half-written."""
    for path in paths:
        with Image.open(path) as im:
            im.load()
            assert im.size == (SIDE, SIDE), path


def group_members(pgid: int) -> list[tuple[int, int, str]]:
    """``(pid, ppid, state)`` of the processes in group ``pgid``, read from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members.append((int(entry), int(fields[1]), fields[0].decode()))
    return members


def reap_ours(pgid: int, main: subprocess.Popen) -> None:
    """Collect the exit status of the group's processes that were handed to this one."""
    main.poll()
    for pid, ppid, _ in group_members(pgid):
        if ppid == os.getpid() and pid != main.pid:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def group_gone(pgid: int, main: subprocess.Popen, timeout: float) -> bool:
    """Whether every process of group ``pgid`` has ended (and been reaped) in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        reap_ours(pgid, main)
        time.sleep(0.02)


def gone(pids: list[int], pgid: int, main: subprocess.Popen, timeout: float) -> bool:
    """Whether the processes ``pids`` have all ended in time (zombies count as ended)."""
    deadline = time.monotonic() + timeout
    while True:
        running = {pid for pid, _, state in group_members(pgid) if state not in "ZX"}
        if not running & set(pids):
            return True
        if time.monotonic() > deadline:
            return False
        reap_ours(pgid, main)
        time.sleep(0.02)


@pytest.fixture(scope="module")
def subreaper():
    """Adopt the orphans of this test process's children, so that they can be reaped.

    A killed worker stays a zombie until its parent collects it; once the main
    process is killed, the workers' new parent is the nearest subreaper or
    init, and an init that never reaps would keep the process group in
    existence for ever. Being the subreaper, this process reaps them itself.
    """
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
    if libc is not None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    yield
    if libc is not None:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@pytest.fixture(scope="module")
def folder(tmp_path_factory, subreaper) -> tuple[Path, Path, dict[str, str]]:
    """Noise PNGs (which compress slowly), a model fitted by the CLI, the input digests."""
    root = tmp_path_factory.mktemp("signals")
    inputs = root / "in"
    inputs.mkdir()
    rng = np.random.default_rng(3)
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(inputs / f"img{i:03d}.png", compress_level=0)
    model = root / "model.npz"
    fitted = subprocess.run(
        histmatch("fit", inputs, "-o", model), capture_output=True, text=True, timeout=120
    )
    assert fitted.returncode == 0, fitted.stderr
    return inputs, model, digests(inputs)


def start(inputs: Path, model: Path, out: Path) -> subprocess.Popen:
    """``histmatch transform`` in a new session; returns once it has written outputs
    and, as far as polling can tell, while it is writing another."""
    proc = subprocess.Popen(
        histmatch("transform", "-m", model, inputs, "-o", out, "--jobs", "2",
                  "--png-compression", "9"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out.is_dir() and len(outputs(out)) >= 2 and hidden_files(out)):
        if proc.poll() is not None:
            pytest.fail(f"the run ended before it could be signalled: {proc.communicate()}")
        if time.monotonic() > deadline:
            finish_group(proc)
            pytest.fail("no outputs and no write in progress seen")
        time.sleep(0.005)
    return proc


def finish_group(proc: subprocess.Popen) -> None:
    """Leave no process behind, whatever the test found."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    group_gone(proc.pid, proc, timeout=10)


def rerun_cleans(inputs: Path, model: Path, out: Path) -> None:
    """A complete run over the same output leaves every output and no temporary file."""
    rerun = subprocess.run(
        histmatch("transform", "-m", model, inputs, "-o", out, "--jobs", "2", "--overwrite"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"{N_IMAGES} written, 0 failed" in rerun.stdout
    assert hidden_files(out) == []
    assert len(outputs(out)) == N_IMAGES
    assert_whole(outputs(out))


def assert_recovered(inputs, model, out, before) -> None:
    """After a kill: whole outputs, only our temp files left, a rerun cleans them, inputs kept."""
    assert_whole(outputs(out))
    left = hidden_files(out)
    assert all(TEMP_NAME.fullmatch(name) for name in left), left
    rerun_cleans(inputs, model, out)
    assert digests(inputs) == before


def test_sigkill_of_the_group_leaves_only_recognised_temp_files(folder, tmp_path):
    inputs, model, before = folder
    out = tmp_path / "out"
    proc = start(inputs, model, out)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        assert group_gone(proc.pid, proc, timeout=10), group_members(proc.pid)
    finally:
        finish_group(proc)
    assert_recovered(inputs, model, out, before)


def test_sigint_of_the_group_stops_cleanly(folder, tmp_path):
    inputs, model, before = folder
    out = tmp_path / "out"
    proc = start(inputs, model, out)
    try:
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert group_gone(proc.pid, proc, timeout=10), group_members(proc.pid)
    finally:
        finish_group(proc)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "interrupted" in stderr
    written = len(outputs(out))
    assert 2 <= written < N_IMAGES
    assert f"{written} written, 0 failed, {N_IMAGES - written} not processed" in stdout, stdout
    assert "(interrupted)" in stdout
    assert hidden_files(out) == []
    assert_whole(outputs(out))
    assert digests(inputs) == before


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the workers through /proc")
def test_workers_end_when_the_main_process_is_killed(folder, tmp_path):
    inputs, model, before = folder
    out = tmp_path / "out"
    proc = start(inputs, model, out)
    try:
        workers = [pid for pid, ppid, _ in group_members(proc.pid) if ppid == proc.pid]
        assert len(workers) == 2, group_members(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)  # not its pipes: the workers hold them until they end
        assert gone(workers, proc.pid, proc, timeout=5), group_members(proc.pid)
        assert group_gone(proc.pid, proc, timeout=10), group_members(proc.pid)
    finally:
        finish_group(proc)
    assert_recovered(inputs, model, out, before)
