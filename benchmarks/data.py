"""Data pipeline throughput with training switched off, against what a training step consumes.

The loaders are distgan's own batch sources, called for consecutive steps
exactly as the trainer calls them, for the embedded MNIST digits (in memory),
an image folder decoded by DataLoader workers, and the same folder packed by
`distgan prepare` (memory-mapped). The folder is generated here: RGB PNG
files of --source-size pixels, resized to --resolution while loading. The
training consumption is the images per second of the real training step
(Trainer.train_step) of the DCGAN pair on the packed data at --resolution.

    python benchmarks/data.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

from distgan.bench import script_main, start_trainer, summarize
from distgan.config import TrainConfig
from distgan.data import open_data
from distgan.data.packed import pack_folder
from synthetic import write_image_folder

TARGET_RATIO = 20.0  # packed loader images per second over the training step's consumption
CPU = torch.device("cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=2048, help="Images in the generated folder (default: %(default)s).")
    parser.add_argument("--source-size", type=int, default=64, help="Side of the generated PNG files (default: %(default)s).")
    parser.add_argument("--resolution", type=int, default=32, help="Side of the loaded images (default: %(default)s).")
    parser.add_argument("--batch-size", type=int, default=64, help="Images per batch (default: %(default)s).")
    parser.add_argument("--steps", type=int, default=40, help="Batches per timed block (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=5, help="Timed blocks per loader (default: %(default)s).")
    parser.add_argument("--num-workers", type=int, default=TrainConfig.num_workers,
                        help="DataLoader workers for the folder (default: %(default)s, as distgan train).")
    parser.add_argument("--train-steps", type=int, default=10, help="Timed training steps per block (default: %(default)s).")
    parser.add_argument("--width", type=int, help="Base width of the DCGAN pair; default: the model's.")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a smoke run; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: data.json).")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.count, args.source_size, args.resolution, args.batch_size = 48, 24, 16, 8
        args.steps, args.repeats, args.train_steps, args.width, args.num_workers = 3, 2, 2, 8, 1


def block_rates(call: Callable[[int], Any], first_step: int, repeats: int, steps: int, batch_size: int) -> list[float]:
    """Call `call(step)` for consecutive steps in `repeats` timed blocks; return images per second per block."""
    step = first_step
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            call(step)
            step += 1
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return rates


def loader_rates(source: Any, args: argparse.Namespace) -> list[float]:
    """Images per second of `source.batch(step)` over consecutive steps, one value per timed block."""
    source.batch(0)  # starts DataLoader workers, where there are any
    rates = block_rates(source.batch, 1, args.repeats, args.steps, args.batch_size)
    source.close()
    return rates


def training_rates(packed: Path, args: argparse.Namespace, run_dir: Path) -> list[float]:
    """Images per second of the real training step on the packed data, one value per timed block."""
    warmup = 2
    total = warmup + args.repeats * args.train_steps
    trainer = start_trainer({
        "data": str(packed), "model": "dcgan", "width": args.width, "batch_size": args.batch_size, "cpu": True,
        "steps": total, "ema": False, "log_every": total, "sample_every": 0, "checkpoint_every": 0,
        "out": str(run_dir),
    })
    try:
        for step in range(warmup):
            trainer.train_step(step)
        return block_rates(trainer.train_step, warmup, args.repeats, args.train_steps, args.batch_size)
    finally:
        trainer.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    end_step = 2 + args.repeats * args.steps
    options = dict(seed=0, global_batch=args.batch_size, rank=0, world_size=1, device=CPU, end_step=end_step)
    with tempfile.TemporaryDirectory(prefix="distgan-data-") as workdir:
        workdir = Path(workdir)
        folder = write_image_folder(workdir / "images", args.count, args.source_size)
        start = time.perf_counter()
        pack_folder(folder, workdir / "packed", 3, args.resolution, num_workers=0)
        pack_seconds = time.perf_counter() - start

        loaders = {
            "mnist (in memory)": (open_data("mnist", None, None), 0),
            "image folder (PNG decode)": (open_data(str(folder), args.resolution, 3), args.num_workers),
            "packed (memory-mapped)": (open_data(str(workdir / "packed"), None, None), 0),
        }
        measured = {}
        for name, (data, workers) in loaders.items():
            measured[name] = loader_rates(data.source(**options, num_workers=workers), args)
        training = training_rates(workdir / "packed", args, workdir / "run")

    consumption = summarize(training)["median"]
    rows = []
    for name, rates in measured.items():
        summary = summarize(rates)
        data, workers = loaders[name]
        rows.append({
            "loader": name, "image shape": "x".join(map(str, data.sample_shape)), "workers": workers,
            "img/s (median)": summary["median"], "p25": summary["p25"], "p75": summary["p75"],
            "x training": summary["median"] / consumption,
        })
    rows.append({"loader": f"training step (DCGAN, packed {args.resolution}x{args.resolution})",
                 "image shape": f"3x{args.resolution}x{args.resolution}", "workers": 0,
                 "img/s (median)": consumption, "p25": summarize(training)["p25"], "p75": summarize(training)["p75"],
                 "x training": 1.0})
    packed_ratio = rows[2]["x training"]
    return {
        "title": f"Data pipeline: loader images/s with training off (batch {args.batch_size}, 1 process)",
        "rows": rows,
        "target": {"packed x training": f">= {TARGET_RATIO}", "measured": packed_ratio,
                   "meets target": packed_ratio >= TARGET_RATIO},
        "samples": {**measured, "training": training},
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "notes": [f"target: packed loader >= {TARGET_RATIO:g}x the training step's consumption; measured "
                  f"{packed_ratio:.1f}x ({'meets' if packed_ratio >= TARGET_RATIO else 'misses'} it)",
                  f"{args.count} generated PNG files of {args.source_size}x{args.source_size}; packing them took "
                  f"{pack_seconds:.1f} s in one process",
                  f"median of {args.repeats} blocks of {args.steps} batches; torch threads {torch.get_num_threads()}"],
    }


if __name__ == "__main__":
    script_main("data", build_parser, run)
