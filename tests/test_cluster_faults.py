"""A disk that fills up during a save (a small tmpfs) and a node lost from a two-host run (network namespaces).

Both need root: the tests mount a tmpfs and create network namespaces joined
by a veth pair, with addresses that exist only inside those namespaces. They
skip with the reason where that is not possible, and remove what they created
even when they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from conftest import BIN, LAUNCH_TIMEOUT, assert_ok, assert_user_error, run_distgan
from distgan.checkpoint import check_checkpoint, file_sha256, latest_checkpoint

DISK_SIZE = "16m"
POLL_SECONDS = 0.02
RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def leftovers(run: Path) -> list[str]:
    return sorted(str(path.relative_to(run)) for path in run.rglob(".tmp-*"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_SIZE mounted at tmp_path/disk, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE},mode=0755", "distgan-test", str(mount_point))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if _run("umount", str(mount_point)).returncode != 0:
            _run("umount", "--lazy", str(mount_point))


def fill_disk(mount_point: Path, leave_bytes: int) -> Path:
    """Write a ballast file that leaves about `leave_bytes` free on the file system of `mount_point`."""
    stats = os.statvfs(mount_point)
    ballast = mount_point / "ballast"
    with open(ballast, "wb") as file:
        file.write(b"\xff" * max(0, stats.f_bavail * stats.f_frsize - leave_bytes))
    return ballast


# A dense pair with three hidden layers of width 256: its checkpoint is about 3.8 MB, so three fit on the 16 MB disk.
FULL = ["train", "--cpu", "--data", "grid25", "--width", "256", "--depth", "3", "--batch-size", "16",
        "--checkpoint-every", "2", "--log-every", "2", "--sample-every", "0"]


def test_full_disk_keeps_previous_checkpoint(small_disk: Path, tmp_path: Path):
    run = small_disk / "run"
    assert_ok(run_distgan(*FULL, "--steps", "2", "--out", str(run), cwd=tmp_path))
    first = run / "checkpoints" / "step-0000002"
    hashes = {path.name: file_sha256(path) for path in first.iterdir()}
    checkpoint_bytes = sum(path.stat().st_size for path in first.iterdir())
    ballast = fill_disk(small_disk, checkpoint_bytes // 2)

    stopped = run_distgan(*FULL, "--steps", "6", "--out", str(run), cwd=tmp_path)
    assert_user_error(stopped, "cannot write checkpoint", "step-0000004", "the disk is full",
                      "earlier checkpoints are intact", "run the same command again")
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-0000002"]
    assert {path.name: file_sha256(path) for path in first.iterdir()} == hashes
    check_checkpoint(first)
    assert leftovers(run) == []
    assert json.loads((run / "generator" / "generator.json").read_text())["step"] == 2

    continued = run_distgan(*FULL, "--steps", "6", "--on-save-error", "continue", "--out", str(run), cwd=tmp_path)
    # The checkpoint of step 4 fails with a warning; that of the last step stops the run with an error.
    assert "step-0000004: the disk is full" in continued.stderr
    assert "Training continues (--on-save-error continue)" in continued.stderr
    assert_user_error(continued, "cannot write checkpoint", "step-0000006", "the disk is full")
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["step-0000002"]
    assert leftovers(run) == []

    ballast.unlink()
    recovered = run_distgan(*FULL, "--steps", "6", "--out", str(run), cwd=tmp_path)
    assert_ok(recovered)
    assert [int(step) for step in RESUMED.findall(recovered.stderr)] == [2]
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == [
        "step-0000002", "step-0000004", "step-0000006"]


@dataclass
class Host:
    namespace: str
    interface: str
    address: str


@pytest.fixture
def two_hosts() -> Iterator[tuple[Host, Host]]:
    """Two network namespaces joined by a veth pair, 10.213.7.1 and 10.213.7.2; deleted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = f"dg{os.getpid() % 100000}"
    hosts = (Host(f"{tag}a", f"{tag}a", "10.213.7.1"), Host(f"{tag}b", f"{tag}b", "10.213.7.2"))
    created: list[str] = []
    try:
        for host in hosts:
            added = _run("ip", "netns", "add", host.namespace)
            if added.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {added.stderr.strip()}")
            created.append(host.namespace)
        steps = [
            ("ip", "link", "add", hosts[0].interface, "type", "veth", "peer", "name", hosts[1].interface),
            *[("ip", "link", "set", host.interface, "netns", host.namespace) for host in hosts],
            *[("ip", "-n", host.namespace, "addr", "add", f"{host.address}/30", "dev", host.interface)
              for host in hosts],
            *[("ip", "-n", host.namespace, "link", "set", name, "up") for host in hosts
              for name in (host.interface, "lo")],
        ]
        for step in steps:
            done = _run(*step)
            if done.returncode != 0:
                pytest.skip(f"cannot set up the veth pair ({' '.join(step)}): {done.stderr.strip()}")
        yield hosts
    finally:
        for namespace in created:
            pids = _run("ip", "netns", "pids", namespace).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            # Deleting a namespace deletes the veth end inside it, and with it the pair.
            _run("ip", "netns", "delete", namespace)


def start_host(host: Host, rank: int, main: Host, port: int, args: list[str], cwd: Path) -> subprocess.Popen:
    command = [
        "ip", "netns", "exec", host.namespace, "env", f"GLOO_SOCKET_IFNAME={host.interface}",
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
        "--machine_rank", str(rank), "--main_process_ip", main.address, "--main_process_port", str(port),
        "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "distgan", *args,
    ]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(processes: list[subprocess.Popen]) -> list[str]:
    """Wait for every process, within LAUNCH_TIMEOUT, and return their stderr; kill any still running."""
    errors = []
    try:
        for process in processes:
            errors.append(process.communicate(timeout=LAUNCH_TIMEOUT)[1])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return errors


# Each port lives in its host's own namespace, so no other process on the machine can hold it.
PORT = 29500
LOST = ["train", "--cpu", "--data", "grid25", "--width", "16", "--batch-size", "16", "--steps", "100",
        "--checkpoint-every", "20", "--log-every", "20", "--sample-every", "0", "--collective-timeout", "10",
        "--out", "run"]


def test_cut_link_stops_survivor_then_restart_resumes(two_hosts: tuple[Host, Host], tmp_path: Path):
    main, other = two_hosts
    processes = [start_host(host, rank, main, PORT, LOST, tmp_path) for rank, host in enumerate(two_hosts)]
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT
        while not (tmp_path / "run" / "checkpoints" / "step-0000020").is_dir():
            assert all(process.poll() is None for process in processes), "a host exited before the first checkpoint"
            assert time.monotonic() < deadline, "timed out waiting for the first checkpoint"
            time.sleep(POLL_SECONDS)
        assert _run("ip", "-n", other.namespace, "link", "set", other.interface, "down").returncode == 0
    finally:
        survivor_stderr, _ = finish(processes)

    # The survivor stops by itself after --collective-timeout; finish() bounds the wait.
    assert processes[0].returncode != 0
    latest = latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name < "step-0000100"
    lines = [line for line in survivor_stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, survivor_stderr[-3000:]
    assert "process 0 lost contact with the other processes of the run" in lines[0]
    assert "Timed out" in lines[0]
    assert f"The latest complete checkpoint is {latest.name}" in lines[0]

    assert _run("ip", "-n", other.namespace, "link", "set", other.interface, "up").returncode == 0
    restarted = [start_host(host, rank, main, PORT + 1, LOST, tmp_path) for rank, host in enumerate(two_hosts)]
    errors = finish(restarted)
    assert [process.returncode for process in restarted] == [0, 0], errors[0][-3000:] + errors[1][-3000:]
    assert [int(step) for step in RESUMED.findall(errors[0])] == [int(latest.name.removeprefix("step-"))]
    assert (tmp_path / "run" / "checkpoints" / "step-0000100").is_dir()
