"""Sample quality targets: train with the default configuration, then measure with `distgan evaluate`.

For each data set and seed this runs `distgan train --cpu --data DATA --seed S`
with no other training option, so the figures are those of the defaults,
and `distgan evaluate` on the run (G_ema, 10,000 samples). Training speed
comes from the run's metrics.jsonl (steps and images per second, leaving out
the first logged interval, which includes start-up) and the wall time of the
training command. The targets:

- grid25: 25 of 25 modes and at least 95 % high-quality samples, every seed.
- ring8: 8 of 8 modes and at least 97 % high-quality samples, every seed.
- mnist: 10 of 10 classes, class-histogram KL below 0.05 and a classifier
  Fréchet distance within 3 times the real-vs-real floor.

    python benchmarks/quality.py                          # all three, seeds 0 1 2 for the mixtures
    python benchmarks/quality.py --data grid25 --seeds 0  # one data set, one seed
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from distgan.bench import script_main, summarize

TIMEOUT = 3600  # seconds for one training run
MIXTURE_TARGETS = {"grid25": (25, 95.0), "ring8": (8, 97.0)}  # modes covered, high-quality percent
MNIST_KL_TARGET = 0.05
MNIST_FRECHET_RATIO_TARGET = 3.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="grid25,ring8,mnist", help="Comma-separated data sets (default: %(default)s).")
    parser.add_argument("--seeds", default="0,1,2", help="Comma-separated seeds of the 2D runs (default: %(default)s).")
    parser.add_argument("--mnist-seeds", default="0", help="Comma-separated seeds of the MNIST runs (default: %(default)s).")
    parser.add_argument("--steps", type=int, help="Training steps; default: the configuration's default.")
    parser.add_argument("--samples", type=int, default=10_000, help="Samples to evaluate (default: %(default)s).")
    parser.add_argument("--keep", help="Folder to keep the run directories in; default: a temporary folder.")
    parser.add_argument("--quick", action="store_true", help="Tiny runs to check that the script works; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: quality.json).")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.data, args.seeds, args.mnist_seeds, args.steps, args.samples = "grid25", "0", "0", 20, 2500


def _distgan(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "distgan", *arguments], cwd=cwd, capture_output=True, text=True,
                            timeout=TIMEOUT, env=dict(os.environ))
    if result.returncode != 0:
        raise RuntimeError(f"distgan {' '.join(arguments)} failed with exit code {result.returncode}:\n"
                           f"{result.stderr[-3000:]}")
    return result


def measure(args: argparse.Namespace, data: str, seed: int, workdir: Path) -> dict[str, Any]:
    """Train and evaluate one run; return its row of the result table."""
    run_dir = workdir / f"{data}-seed{seed}"
    train = ["train", "--cpu", "--data", data, "--seed", str(seed), "--out", str(run_dir), "--sample-every", "0"]
    if args.steps:
        train += ["--steps", str(args.steps)]
    started = time.perf_counter()
    _distgan(*train, cwd=workdir)
    seconds = time.perf_counter() - started
    _distgan("evaluate", str(run_dir), "--n", str(args.samples), "--seed", "0", cwd=workdir)
    evaluation = json.loads((run_dir / "evaluation" / "G_ema.json").read_text())
    config = (run_dir / "config.toml").read_text()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [row["images_per_second"] for row in rows][1:] or [rows[-1]["images_per_second"]]
    images_per_second = summarize(rates)["median"]
    batch = next(int(line.split("=")[1]) for line in config.splitlines() if line.startswith("batch_size ="))
    row: dict[str, Any] = {"data": data, "seed": seed, "steps": evaluation["step"], "train s": round(seconds, 1),
                           "steps/s": round(images_per_second / batch, 1), "img/s": round(images_per_second)}
    metrics = evaluation["metrics"]
    if data in MIXTURE_TARGETS:
        modes, quality = MIXTURE_TARGETS[data]
        mixture = metrics["mixture"]
        row.update({"modes": f"{mixture['modes_covered']}/{mixture['modes_total']}",
                    "high quality %": round(mixture["high_quality_percent"], 2),
                    "reverse KL": round(mixture["reverse_kl"], 4),
                    "meets target": mixture["modes_covered"] >= modes and mixture["high_quality_percent"] >= quality})
    else:
        digits = metrics["digits"]
        row.update({"classes": f"{digits['classes_covered']}/{digits['classes_total']}",
                    "class KL": round(digits["class_kl"], 4), "Frechet": round(digits["frechet_distance"], 2),
                    "floor": round(digits["frechet_floor"], 2), "ratio": round(digits["frechet_ratio"], 2),
                    "meets target": digits["classes_covered"] == digits["classes_total"]
                    and digits["class_kl"] < MNIST_KL_TARGET and digits["frechet_ratio"] <= MNIST_FRECHET_RATIO_TARGET})
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    apply_quick(args)
    mixture_rows, digit_rows = [], []
    with tempfile.TemporaryDirectory(prefix="distgan-quality-") as temporary:
        workdir = Path(args.keep or temporary).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        for data in args.data.split(","):
            seeds = args.mnist_seeds if data == "mnist" else args.seeds
            for seed in (int(value) for value in seeds.split(",")):
                (digit_rows if data == "mnist" else mixture_rows).append(measure(args, data, seed, workdir))
    # The two kinds of rows have different columns, so MNIST gets a table of its own.
    return {
        "title": "Sample quality of the default configuration (G_ema, distgan evaluate)",
        "rows": mixture_rows or digit_rows,
        "tables": [{"title": "mnist", "rows": digit_rows}] if mixture_rows and digit_rows else [],
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "notes": ["targets: grid25 25/25 modes and >= 95 % high quality; ring8 8/8 and >= 97 %; mnist 10/10 "
                  "classes, class KL < 0.05, Frechet distance <= 3 x the real-vs-real floor",
                  "steps/s and img/s: median over the logged intervals after the first; train s: wall time of "
                  "distgan train including start-up"],
    }


if __name__ == "__main__":
    script_main("quality", build_parser, run)
