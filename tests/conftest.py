"""Shared helpers: run the real CLI and a real `accelerate launch` in subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
LAUNCH_TIMEOUT = 600  # seconds; a few-step run takes about 10 s on 2 cores


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_distgan(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m distgan ARGS` and return the finished process with its output."""
    return subprocess.run([sys.executable, "-m", "distgan", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT, env={**os.environ, **(env or {})})


def launch_command(*target: str, num_processes: int = 2, launcher_args: tuple[str, ...] = ()) -> list[str]:
    """Return `accelerate launch --multi_gpu --num_processes N [launcher_args] TARGET` for CPU processes (gloo)."""
    return [
        str(BIN / "accelerate"), "launch", "--multi_gpu", "--num_processes", str(num_processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()), *launcher_args, *target,
    ]


def launch_distgan(*args: str, cwd: Path, num_processes: int = 2) -> subprocess.CompletedProcess:
    """Run `accelerate launch --multi_gpu --num_processes N -m distgan ARGS` on CPU processes (gloo)."""
    command = launch_command("-m", "distgan", *args, num_processes=num_processes)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Check exit code 1, no traceback, and one `error:` line containing every fragment; return that line."""
    assert result.returncode == 1, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def mnist_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of 6 steps on the embedded MNIST data by two CPU processes, checkpointed at steps 3 and 6."""
    workdir = tmp_path_factory.mktemp("mnist_run")
    result = launch_distgan("train", "--cpu", "--steps", "6", "--batch-size", "16", "--log-every", "3",
                            "--sample-every", "3", "--checkpoint-every", "3", "--out", "run", cwd=workdir)
    assert_ok(result)
    return workdir / "run"


@pytest.fixture(scope="session")
def exported_onnx(mnist_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generator of mnist_run exported by `distgan export` to a separate folder."""
    out = tmp_path_factory.mktemp("export") / "generator.onnx"
    assert_ok(run_distgan("export", str(mnist_run), "--out", str(out), cwd=out.parent))
    return out


SCRIPTS = Path(__file__).parent / "scripts"


def launch_script(name: str, *args: str, cwd: Path, num_processes: int = 2) -> subprocess.CompletedProcess:
    """Run tests/scripts/NAME under `accelerate launch --multi_gpu --num_processes N` on CPU processes."""
    command = launch_command(str(SCRIPTS / name), *args, num_processes=num_processes)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
