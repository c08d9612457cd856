"""Processes killed for real (SIGKILL) during training and during a checkpoint write, then started again."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import torch
from safetensors.torch import load_file

from conftest import LAUNCH_TIMEOUT, SCRIPTS, assert_ok, launch_command, launch_distgan, run_distgan
from distgan.checkpoint import check_checkpoint, latest_checkpoint

POLL_SECONDS = 0.02
RESUMED = re.compile(r"resumed from (\S+) at step (\d+)")


def weights(run: Path, step: int, name: str) -> dict[str, torch.Tensor]:
    return load_file(run / "checkpoints" / f"step-{step:07d}" / f"{name}.safetensors")


def assert_same_weights(run: Path, reference: Path, step: int) -> None:
    for name in ("G", "D", "G_ema"):
        expected, actual = weights(reference, step, name), weights(run, step, name)
        assert expected.keys() == actual.keys()
        for key in expected:
            assert torch.equal(expected[key], actual[key]), f"{name}.{key} differs from the uninterrupted run"


def resumed_steps(stderr: str) -> list[int]:
    return [int(match.group(2)) for match in RESUMED.finditer(stderr)]


def leftovers(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob(".tmp-*"))


def wait_for(condition, process: subprocess.Popen, what: str, timeout: float = LAUNCH_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            _, stderr = process.communicate()
            raise AssertionError(f"the run exited with {process.returncode} before {what}\n{stderr[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


def worker_with_local_rank(launcher: subprocess.Popen, local_rank: int) -> psutil.Process:
    """Find the training process that the launcher started with LOCAL_RANK=local_rank."""
    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("LOCAL_RANK") == str(local_rank):
                return child
        except psutil.Error:
            continue  # a process that ended or is not ours to read
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank} under launcher {launcher.pid}")


ELASTIC = ["train", "--cpu", "--data", "grid25", "--width", "16", "--batch-size", "16", "--steps", "80",
           "--checkpoint-every", "20", "--log-every", "20", "--sample-every", "0"]


def test_killed_worker_restarts_from_checkpoint(tmp_path: Path):
    command = launch_command("-m", "distgan", *ELASTIC, "--out", "elastic", launcher_args=("--max_restarts", "1"))
    launcher = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # A step-NNNNNNN directory appears by an atomic rename, so once it exists it is complete.
        wait_for(lambda: (tmp_path / "elastic" / "checkpoints" / "step-0000020").is_dir(), launcher,
                 "the first checkpoint")
        worker = worker_with_local_rank(launcher, 1)
        os.kill(worker.pid, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=LAUNCH_TIMEOUT)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.communicate()
    assert launcher.returncode == 0, stderr[-4000:]
    resumed = resumed_steps(stderr)
    assert resumed, f"the restarted workers did not resume; was the run finished before the kill?\n{stderr[-3000:]}"
    assert 20 <= resumed[0] < 80

    assert_ok(launch_distgan(*ELASTIC, "--out", "straight", cwd=tmp_path))
    assert_same_weights(tmp_path / "elastic", tmp_path / "straight", 80)
    assert leftovers(tmp_path / "elastic") == []


KILLED = ["train", "--cpu", "--data", "grid25", "--width", "16", "--batch-size", "16", "--steps", "8",
          "--checkpoint-every", "2", "--log-every", "2", "--sample-every", "0", "--out", "run"]


def kill_during_save(point: str, step: int, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / "kill_during_save.py"), point, str(step), *KILLED],
                          cwd=cwd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def test_kill_inside_checkpoint_write_resumes_from_complete(tmp_path: Path):
    run = tmp_path / "run"
    # Kill point, step whose save is killed, step that start resumes from, the temporary that start removes
    # from the kill before it, and the newest complete checkpoint after the kill.
    chain = [
        ("torn-weights", 4, None, None, 2),
        ("before-rename", 4, 2, "checkpoints/.tmp-step-0000004-", 2),
        ("before-generator", 4, 2, "checkpoints/.tmp-step-0000004-", 4),
        ("torn-generator", 6, 4, None, 6),
    ]
    for point, step, resumed_from, removed, latest_after in chain:
        result = kill_during_save(point, step, tmp_path)
        assert result.returncode == -signal.SIGKILL, f"{point}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert resumed_steps(result.stderr) == ([resumed_from] if resumed_from else []), point
        if removed:
            assert re.search(rf"removing \S*{re.escape(removed)}\S*, left incomplete by an interrupted save",
                             result.stderr), f"{point}: no log line for the removed {removed}\n{result.stderr}"
        if point != "before-generator":  # that kill comes after the rename, so no temporary is left
            assert leftovers(run), f"{point}: the kill left no temporary behind"
        assert latest_checkpoint(run).name == f"step-{latest_after:07d}", point

    final = run_distgan(*KILLED, cwd=tmp_path)
    assert_ok(final)
    assert resumed_steps(final.stderr) == [6]
    assert re.search(r"removing \S*generator/\.tmp-\S*, left incomplete by an interrupted save", final.stderr)
    assert leftovers(run) == []
    for path in sorted((run / "checkpoints").iterdir()):
        check_checkpoint(path)
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == [
        "step-0000002", "step-0000004", "step-0000006", "step-0000008"]

    assert_ok(run_distgan(*KILLED[:-1], "straight", cwd=tmp_path))
    assert_same_weights(run, tmp_path / "straight", 8)
    record = json.loads((run / "generator" / "generator.json").read_text())
    assert record["step"] == 8
    exported = load_file(run / "generator" / "generator.safetensors")
    for key, tensor in weights(run, 8, "G_ema").items():
        assert torch.equal(exported[key], tensor)


def test_retention_keeps_resume_source_and_newest(tmp_path: Path):
    common = ["train", "--cpu", "--data", "grid25", "--width", "16", "--batch-size", "16", "--checkpoint-every", "2",
              "--log-every", "2", "--sample-every", "0", "--out", "run"]
    assert_ok(run_distgan(*common, "--steps", "6", cwd=tmp_path))
    run = tmp_path / "run"
    damaged = run / "checkpoints" / "step-0000006" / "D.safetensors"
    damaged.write_bytes(damaged.read_bytes()[:64])

    result = run_distgan(*common, "--steps", "12", "--keep-checkpoints", "2", cwd=tmp_path)
    assert_ok(result)
    assert resumed_steps(result.stderr) == [4]  # step 6 is damaged and skipped
    # Step 4 is the checkpoint this run resumed from; 10 and 12 are the two newest.
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == [
        "step-0000004", "step-0000010", "step-0000012"]
    assert re.search(r"removed checkpoint \S*step-0000008", result.stderr)
    assert leftovers(run) == []
    assert "keep_checkpoints = 2" in (run / "config.toml").read_text()
