"""The accelerate configs and launch scripts in launch/."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file

from conftest import BIN, LAUNCH_TIMEOUT, assert_ok, free_port

LAUNCH = Path(__file__).parent.parent / "launch"
CONFIGS = sorted(LAUNCH.glob("*.yaml"))
SCRIPTS = [LAUNCH / "multi_node.sh", LAUNCH / "slurm.sbatch"]


def test_every_config_is_present():
    assert {path.name for path in CONFIGS} == {"cpu.yaml", "single_gpu.yaml", "multi_gpu.yaml", "multi_node.yaml",
                                               "fsdp.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_parses_with_accelerate(path: Path):
    config = load_config_from_file(str(path))
    assert config.num_processes >= 1
    assert config.mixed_precision in ("no", "bf16", "fp16")
    if config.num_machines > 1:
        assert config.main_process_ip and config.main_process_port
        assert config.num_processes % config.num_machines == 0


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda path: path.name)
def test_script_passes_bash_and_shellcheck(path: Path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    result = subprocess.run([str(BIN / "shellcheck"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_cpu_config_launches_two_processes(tmp_path: Path):
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(LAUNCH / "cpu.yaml"),
               "--main_process_port", str(free_port()), "-m", "distgan", "train", "--cpu", "--data", "ring8",
               "--steps", "4", "--batch-size", "16", "--log-every", "2", "--sample-every", "0", "--out", "run"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert_ok(result)
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-0000004" / "trainer.json").read_text())
    assert state["world_size"] == 2
    assert "on 2 process(es)" in result.stderr


def test_multi_node_script_requires_rank(tmp_path: Path):
    result = subprocess.run(["bash", str(LAUNCH / "multi_node.sh")], capture_output=True, text=True,
                            env={"PATH": f"{BIN}:/usr/bin:/bin"}, cwd=tmp_path)
    assert result.returncode != 0
    assert "set NODE_RANK to the index of this node" in result.stderr
