"""CPU scaling: 1 process against 2 processes (gloo) at the same batch per process.

Each run is a real `distgan train --cpu`, the 2-process one under
`accelerate launch --multi_gpu --num_processes 2`. Throughput is read from
the run's metrics.jsonl (images per second of the global batch), leaving out
the first logged interval, which includes start-up. Efficiency is the
2-process throughput over twice the 1-process throughput. Every process gets
--threads torch threads. On a machine with 2 cores the two processes share
the cores that one process could use. The figure then mostly measures the
cost of the gradient all-reduce and of the competition for the cores, not
how training scales on separate devices.

    python benchmarks/scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from distgan.bench import script_main, summarize

TIMEOUT = 1800  # seconds for one training run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dcgan", help="Model (default: %(default)s).")
    parser.add_argument("--data", default="mnist", help="Data set (default: %(default)s).")
    parser.add_argument("--width", type=int, help="Base layer width; default: the model's.")
    parser.add_argument("--batch-per-process", type=int, default=32, help="Batch of each process (default: %(default)s).")
    parser.add_argument("--steps", type=int, default=80, help="Training steps per run (default: %(default)s).")
    parser.add_argument("--log-every", type=int, default=20, help="Steps per logged interval (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each size, alternated (default: %(default)s).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default: %(default)s).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a smoke run; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: scaling.json).")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.steps, args.log_every, args.repeats, args.width, args.batch_per_process = 4, 2, 1, 8, 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train_command(args: argparse.Namespace, processes: int, run_dir: Path) -> list[str]:
    train = ["train", "--cpu", "--data", args.data, "--model", args.model, "--steps", str(args.steps),
             "--batch-size", str(args.batch_per_process * processes), "--log-every", str(args.log_every),
             "--sample-every", "0", "--checkpoint-every", "0", "--no-ema", "--out", str(run_dir)]
    if args.width:
        train += ["--width", str(args.width)]
    if processes == 1:
        return [sys.executable, "-m", "distgan", *train]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()), "-m", "distgan", *train]


def measure_run(args: argparse.Namespace, processes: int, run_dir: Path) -> float:
    """Train once and return the median images per second of the logged intervals after the first."""
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    result = subprocess.run(train_command(args, processes, run_dir), capture_output=True, text=True, env=env,
                            timeout=TIMEOUT)
    if result.returncode != 0:
        raise RuntimeError(f"training with {processes} process(es) failed with exit code {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [row["images_per_second"] for row in rows]
    return summarize(rates[1:] or rates)["median"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    measured: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="distgan-scaling-") as workdir:
        for repeat in range(args.repeats):
            for processes in ((1, 2) if repeat % 2 == 0 else (2, 1)):
                run_dir = Path(workdir) / f"run-{processes}-{repeat}"
                measured[processes].append(measure_run(args, processes, run_dir))
    one, two = summarize(measured[1]), summarize(measured[2])
    efficiency = two["median"] / (2 * one["median"])
    pair_efficiencies = summarize([b / (2 * a) for a, b in zip(measured[1], measured[2])])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = [
        {"processes": 1, "global batch": args.batch_per_process, "img/s (median)": one["median"],
         "min": one["min"], "max": one["max"], "efficiency": 1.0},
        {"processes": 2, "global batch": 2 * args.batch_per_process, "img/s (median)": two["median"],
         "min": two["min"], "max": two["max"], "efficiency": efficiency},
    ]
    return {
        "title": f"CPU scaling: {args.model} on {args.data}, {args.batch_per_process} images per process, "
                 f"{args.threads} thread(s) per process",
        "rows": rows,
        "efficiency": {"median": efficiency, "min": pair_efficiencies["min"], "max": pair_efficiencies["max"]},
        "samples": {str(key): value for key, value in measured.items()},
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "notes": [f"efficiency = img/s with 2 processes / (2 x img/s with 1 process); {args.repeats} runs of each, "
                  f"alternated, {args.steps} steps, first logged interval of {args.log_every} steps left out",
                  f"this machine has {cores} usable cores: with 2 processes they compete for the cores that one "
                  "process could use, so the figure mostly measures all-reduce and contention overhead"],
    }


if __name__ == "__main__":
    script_main("scaling", build_parser, run)
