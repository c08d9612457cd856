"""CPU time of one training step by operator group, measured with torch.profiler.

Sets up the real Trainer, runs --warmup steps, then profiles --steps calls
of Trainer.train_step() and sums each operator's self CPU time into groups
(convolutions, linear layers, optimizer, ...). The time of the steps that no
operator accounts for is Python and framework code between operators
(distgan, Accelerate, torch.nn and autograd bookkeeping). --trace also writes
a Chrome trace for chrome://tracing or Perfetto.

    python benchmarks/profile_step.py --model dcgan
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from distgan.bench import script_main, start_trainer

# An operator inside one of these profiler labels belongs to that label's group; the first match wins.
SCOPES = (
    ("Optimizer.zero_grad", "gradient reset (zero_grad)"),
    ("Optimizer.step", "Adam update (optimizer.step)"),
)
BACKWARD_SCOPE = "autograd::engine::evaluate_function"
# Any other operator is grouped by its name; the first pattern contained in the name wins.
OPERATOR_GROUPS = (
    ("convolution", ("conv",)),
    ("linear layer", ("addmm", "linear", "matmul", "aten::mm", "bmm")),
    ("batch norm", ("batch_norm",)),
    ("activation", ("leaky_relu", "relu", "tanh", "threshold", "softplus", "sigmoid", "clamp")),
    ("EMA update (lerp)", ("lerp",)),
    ("random numbers", ("randn", "normal_", "randperm", "random_", "uniform_")),
)
OTHER = "other operators (arithmetic, indexing, copies)"
OUTSIDE = "outside operators (Python, Accelerate, autograd engine)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="dcgan", help="Model (default: %(default)s).")
    parser.add_argument("--data", default="mnist", help="Data set (default: %(default)s).")
    parser.add_argument("--width", type=int, help="Base layer width; default: the model's.")
    parser.add_argument("--batch-size", type=int, default=64, help="Batch size (default: %(default)s).")
    parser.add_argument("--steps", type=int, default=20, help="Profiled steps (default: %(default)s).")
    parser.add_argument("--warmup", type=int, default=5, help="Steps before profiling (default: %(default)s).")
    parser.add_argument("--top", type=int, default=12, help="Operators listed by self CPU time (default: %(default)s).")
    parser.add_argument("--trace", help="Write a Chrome trace of the profiled steps to this JSON file.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a smoke run; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: profile_step.json).")
    return parser


def group_of(event: Any) -> str:
    """Group a profiled operator by the label it runs under (optimizer, backward pass) and by its name."""
    backward = False
    parent = event.cpu_parent
    while parent is not None:
        for label, group in SCOPES:
            if parent.name.startswith(label):
                return group
        backward = backward or parent.name.startswith(BACKWARD_SCOPE)
        parent = parent.cpu_parent
    lowered = event.name.lower()
    kind = next((group for group, patterns in OPERATOR_GROUPS if any(p in lowered for p in patterns)), None)
    if kind is None:
        return OTHER
    return f"{kind} backward" if backward else kind


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        args.steps, args.warmup, args.width, args.batch_size = 2, 1, 8, 8
    total = args.warmup + args.steps
    with tempfile.TemporaryDirectory(prefix="distgan-profile-") as workdir:
        trainer = start_trainer({
            "data": args.data, "model": args.model, "width": args.width, "batch_size": args.batch_size,
            "cpu": True, "steps": total, "ema": True, "log_every": total, "sample_every": 0,
            "checkpoint_every": 0, "out": str(Path(workdir) / "run"),
        })
        try:
            for step in range(args.warmup):
                trainer.train_step(step)
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                start = time.perf_counter()
                for step in range(args.warmup, total):
                    with record_function("train_step"):
                        trainer.train_step(step)
                wall = time.perf_counter() - start
        finally:
            trainer.close()
    if args.trace:
        profiler.export_chrome_trace(args.trace)

    # Self CPU time of every operator, in ms per step, leaving out the train_step label itself.
    step_ms = wall * 1e3 / args.steps
    totals: dict[str, float] = {}
    for event in profiler.events():
        if event.name == "train_step" or any(event.name.startswith(label) for label, _ in SCOPES):
            continue  # labels, whose self time is Python code between operators
        if event.name.startswith(BACKWARD_SCOPE):
            continue
        group = group_of(event)
        totals[group] = totals.get(group, 0.0) + event.self_cpu_time_total / 1e3 / args.steps
    # The wall time per step is measured while the profiler records, so it includes the profiler's own cost.
    totals[OUTSIDE] = max(0.0, step_ms - sum(totals.values()))
    rows = [{"where": group, "ms per step": value, "share": f"{100 * value / step_ms:.0f}%"}
            for group, value in sorted(totals.items(), key=lambda item: -item[1])]
    events = [event for event in profiler.key_averages() if event.key != "train_step"]
    top = sorted(events, key=lambda event: -event.self_cpu_time_total)[: args.top]
    top_rows = [{"operator": event.key, "calls per step": event.count / args.steps,
                 "self ms per step": event.self_cpu_time_total / 1e3 / args.steps} for event in top]
    return {
        "title": f"CPU profile of one training step: {args.model} on {args.data}, batch {args.batch_size}, EMA on",
        "rows": rows,
        "tables": [{"title": f"Top {args.top} operators by self CPU time", "rows": top_rows}],
        "step_ms": step_ms,
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "notes": [f"{args.steps} profiled steps after {args.warmup} warm-up steps, {step_ms:.1f} ms per step "
                  f"with the profiler recording; torch threads {torch.get_num_threads()}"],
    }


if __name__ == "__main__":
    script_main("profile_step", build_parser, run)
