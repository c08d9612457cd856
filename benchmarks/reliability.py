"""Reliability: how long recovery from injected faults takes, and what a crash-safe checkpoint costs.

Three sections, each with real processes and real faults:

- restart: `accelerate launch --max_restarts 1` with 2 CPU processes; one
  worker is killed with SIGKILL after the first checkpoint. Measures the time
  from the kill to the restarted workers' "resumed from" line, and the steps
  trained again (the last logged step before the kill minus the resume step).
- node: two hosts in network namespaces joined by a veth pair, one process
  each. One host's processes are killed (SIGKILL), or the link is cut.
  Measures the time from the fault to the survivor's exit with its error.
  Needs root and iproute2; skipped otherwise.
- save: save_checkpoint() and load_checkpoint() of the DCGAN pair (MNIST
  size, width 64, EMA on), in this process. Reports the share of SHA-256
  hashing in the save.

    python benchmarks/reliability.py
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from distgan.bench import script_main, summarize

TIMEOUT = 900  # seconds for one launched run
SECTIONS = ("restart", "node", "save")
RESUMED = re.compile(r"resumed from \S+ at step (\d+)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"Comma-separated sections: {', '.join(SECTIONS)}; default: all.")
    parser.add_argument("--repeats", type=int, default=3, help="Faults injected per case (default: %(default)s).")
    parser.add_argument("--collective-timeout", type=int, default=10,
                        help="--collective-timeout of the node runs, in seconds (default: %(default)s).")
    parser.add_argument("--quick", action="store_true", help="One repeat and the save section only.")
    parser.add_argument("--out", help="JSON file to write (default: reliability.json).")
    return parser


class TimedProcess:
    """A subprocess whose stderr lines are collected with the monotonic time at which each arrived."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def first_time(self, pattern: re.Pattern) -> tuple[float, re.Match] | None:
        for moment, line in list(self.lines):
            match = pattern.search(line)
            if match:
                return moment, match
        return None

    def wait(self) -> int:
        try:
            code = self.process.wait(timeout=TIMEOUT)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=10)
        return code

    def stderr(self) -> str:
        return "\n".join(line for _, line in self.lines)


def wait_for_path(path: Path, processes: list[TimedProcess]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if any(process.process.poll() is not None for process in processes):
            raise RuntimeError(f"a run exited before {path} appeared:\n{processes[0].stderr()[-3000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {path}")
        time.sleep(0.01)


def last_logged_step(run_dir: Path) -> int:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return max(int(re.search(r'"step": (\d+)', line).group(1)) for line in lines) if lines else 0


TRAIN = ["-m", "distgan", "train", "--cpu", "--data", "grid25", "--width", "16", "--batch-size", "16",
         "--checkpoint-every", "20", "--log-every", "1", "--sample-every", "0"]


def measure_restart(workdir: Path, repeat: int) -> dict[str, Any]:
    import psutil

    run_dir = workdir / f"restart-{repeat}"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "0", "--max_restarts", "1", *TRAIN, "--steps", "120", "--out", str(run_dir)]
    started = time.monotonic()
    launcher = TimedProcess(command, workdir)
    wait_for_path(run_dir / "checkpoints" / "step-0000020", [launcher])
    time.sleep(0.5)  # let training move past the checkpoint, so that some steps are lost
    workers = [child for child in psutil.Process(launcher.process.pid).children(recursive=True)
               if child.environ().get("LOCAL_RANK") == "1"]
    logged_before_kill = last_logged_step(run_dir)
    killed = time.monotonic()
    os.kill(workers[0].pid, signal.SIGKILL)
    code = launcher.wait()
    finished = time.monotonic()
    resumed = launcher.first_time(RESUMED)
    if code != 0 or resumed is None:
        raise RuntimeError(f"the restarted run failed (exit {code}):\n{launcher.stderr()[-3000:]}")
    resume_step = int(resumed[1].group(1))
    return {"kill to resumed (s)": resumed[0] - killed, "steps trained again": logged_before_kill - resume_step,
            "resume step": resume_step, "run with restart (s)": finished - started}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=60)


def node_hosts_available() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    return None


def measure_node(workdir: Path, repeat: int, fault: str, timeout: int) -> dict[str, Any]:
    tag = f"dgb{os.getpid() % 10000}"
    namespaces, interfaces, addresses = (f"{tag}a", f"{tag}b"), (f"{tag}a", f"{tag}b"), ("10.213.9.1", "10.213.9.2")
    run_dir = workdir / f"node-{fault}-{repeat}"
    hosts: list[TimedProcess] = []
    try:
        for namespace in namespaces:
            _ip("netns", "add", namespace)
        _ip("link", "add", interfaces[0], "type", "veth", "peer", "name", interfaces[1])
        for namespace, interface, address in zip(namespaces, interfaces, addresses):
            _ip("link", "set", interface, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/30", "dev", interface)
            _ip("-n", namespace, "link", "set", interface, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        for rank, (namespace, interface) in enumerate(zip(namespaces, interfaces)):
            command = ["ip", "netns", "exec", namespace, "env", f"GLOO_SOCKET_IFNAME={interface}", sys.executable,
                       "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2", "--num_processes",
                       "2", "--machine_rank", str(rank), "--main_process_ip", addresses[0], "--main_process_port",
                       "29500", "--mixed_precision", "no", "--dynamo_backend", "no", *TRAIN, "--steps", "400",
                       "--collective-timeout", str(timeout), "--out", str(run_dir)]
            hosts.append(TimedProcess(command, workdir))
        wait_for_path(run_dir / "checkpoints" / "step-0000020", hosts)
        fault_time = time.monotonic()
        if fault == "kill host":
            pids = subprocess.run(["ip", "netns", "pids", namespaces[1]], capture_output=True, text=True).stdout.split()
            for pid in pids:
                os.kill(int(pid), signal.SIGKILL)
        else:
            _ip("-n", namespaces[1], "link", "set", interfaces[1], "down")
        code = hosts[0].wait()
        stopped = time.monotonic()
        error = hosts[0].first_time(re.compile(r"^error: process 0 lost contact"))
        if code == 0 or error is None:
            raise RuntimeError(f"the survivor did not stop with the expected error:\n{hosts[0].stderr()[-3000:]}")
        return {"fault": fault, "fault to error line (s)": error[0] - fault_time,
                "fault to survivor exit (s)": stopped - fault_time}
    finally:
        for namespace in namespaces:
            listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
            for pid in listed.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)
        for host in hosts:
            host.wait()


def measure_save(workdir: Path, repeats: int) -> dict[str, Any]:
    import torch

    from distgan.checkpoint import load_checkpoint, safetensors_bytes, save_checkpoint, torch_bytes
    from distgan.models import build_discriminator, build_generator, default_architecture

    architecture = default_architecture("dcgan", "image", [1, 28, 28], 64, 64)
    G, D = build_generator(architecture), build_discriminator(architecture)
    optimizers = {}
    for name, module in (("optimizer_G", G), ("optimizer_D", D)):
        optimizer = torch.optim.Adam(module.parameters())
        for parameter in module.parameters():
            parameter.grad = torch.randn_like(parameter)
        optimizer.step()
        optimizers[name] = optimizer.state_dict()
    models = {"G": G.state_dict(), "D": D.state_dict(), "G_ema": G.state_dict()}
    record = {"format": "distgan-generator", "format_version": 1, "step": 0}
    save_seconds, load_seconds, hash_seconds = [], [], []
    for step in range(1, repeats + 1):
        started = time.perf_counter()
        path = save_checkpoint(workdir / "save", step, models, optimizers, record, "G_ema")
        save_seconds.append(time.perf_counter() - started)
        started = time.perf_counter()
        load_checkpoint(path)
        load_seconds.append(time.perf_counter() - started)
        contents = [safetensors_bytes(state, step) for state in models.values()]
        contents += [torch_bytes(state) for state in optimizers.values()]
        started = time.perf_counter()
        for data in contents:
            hashlib.sha256(data).hexdigest()
        hash_seconds.append(time.perf_counter() - started)
    size = sum(file.stat().st_size for file in path.iterdir())
    return {"checkpoint (MB)": size / 1e6, "save (s)": summarize(save_seconds)["median"],
            "of which SHA-256 (s)": summarize(hash_seconds)["median"], "load (s)": summarize(load_seconds)["median"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.only:
        sections = [name.strip() for name in args.only.split(",")]
    elif args.quick:
        sections = ["save"]
    else:
        sections = list(SECTIONS)
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        raise SystemExit(f"error: invalid section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    repeats = 1 if args.quick else args.repeats
    result: dict[str, Any] = {"title": "Reliability: recovery from injected faults", "rows": [], "tables": [],
                              "notes": [], "samples": {}}
    with tempfile.TemporaryDirectory(prefix="distgan-reliability-") as workdir:
        workdir = Path(workdir)
        if "save" in sections:
            row = measure_save(workdir, max(3, repeats))
            result["tables"].append({"title": "crash-safe save and verified load, DCGAN 1x28x28, width 64",
                                     "rows": [row]})
            result["samples"]["save"] = row
        if "restart" in sections:
            samples = [measure_restart(workdir, repeat) for repeat in range(repeats)]
            result["samples"]["restart"] = samples
            result["tables"].append({"title": "worker killed with SIGKILL under --max_restarts 1 (2 CPU processes)",
                                     "rows": [_summary_row(samples, key) for key in samples[0]]})
        if "node" in sections:
            reason = node_hosts_available()
            if reason:
                result["notes"].append(f"node section skipped: {reason}")
            else:
                samples = [measure_node(workdir, repeat, fault, args.collective_timeout)
                           for fault in ("kill host", "cut link") for repeat in range(repeats)]
                result["samples"]["node"] = samples
                rows = []
                for fault in ("kill host", "cut link"):
                    chosen = [sample for sample in samples if sample["fault"] == fault]
                    rows += [{"fault": fault, **_summary_row(chosen, key)} for key in chosen[0] if key != "fault"]
                result["tables"].append({"title": f"node lost, 2 hosts x 1 process, --collective-timeout "
                                                  f"{args.collective_timeout}", "rows": rows})
    result["notes"].append(f"{repeats} fault(s) per case; times include process start-up where a process restarts")
    if result["tables"]:
        first = result["tables"].pop(0)
        result["title"] = f"Reliability: {first['title']}"
        result["rows"] = first["rows"]
    return result


def _summary_row(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    values = [float(sample[key]) for sample in samples]
    summary = summarize(values)
    return {"measure": key, "median": summary["median"], "min": summary["min"], "max": summary["max"]}


if __name__ == "__main__":
    script_main("reliability", build_parser, run)
