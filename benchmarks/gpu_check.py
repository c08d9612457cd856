"""GPU check: one command that exercises the fast paths on a CUDA GPU and records the figures.

    python benchmarks/gpu_check.py               # one CUDA GPU; an estimated 5 to 7 minutes on one H200
    python benchmarks/gpu_check.py --cpu         # the same checks at tiny sizes on the CPU, where they can run

Sections, each run in its own process so that every one gets a fresh Accelerate state:

1. train: `distgan train` of the DCGAN pair at 64x64 on a generated packed
   data set, with bf16 and with fp16, each without and with --compile, and
   bf16 with --compile --channels-last. Images per second come from metrics.jsonl.
2. sync: CUDA's sync debug mode counts the host-device synchronizations of
   5 training steps (bf16 should have none; fp16 has the GradScaler's
   found-inf reads).
3. overflow: with fp16, a phase whose gradients overflow is repeated at a lower
   loss scale without counting as progress. A step whose overflow the
   repeats cannot cure is skipped by both optimizers (weights and Adam's
   step count unchanged), and the shared GradScaler updates twice per
   step, once for each optimizer.
4. overhead: benchmarks/overhead.py, distgan against a minimal loop, on the GPU.
5. inference: benchmarks/inference.py (ONNX Runtime CUDA against PyTorch), when that script exists.

Prerequisites: a CUDA build of torch, distgan installed with the demo extra
(the overhead section trains on the embedded MNIST digits) and
onnxruntime-gpu for the inference section. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CHILD_TIMEOUT = 420  # seconds for one section's process
RESULT_PREFIX = "GPU_CHECK_RESULT "


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu", action="store_true", help="Run every section that can run on the CPU, at tiny sizes.")
    parser.add_argument("--skip", default="", help="Comma-separated sections to leave out: train, sync, overflow, "
                                                   "overhead, inference.")
    parser.add_argument("--out", default="gpu_check.json", help="JSON file to write (default: %(default)s).")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one in-process check
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser


def sizes(cpu: bool) -> dict[str, Any]:
    """Sizes of every section: the GPU figures, or tiny ones that only check that the CPU path runs."""
    if cpu:
        return {"resolution": 16, "images": 64, "batch": 8, "width": 8, "steps": 6, "log_every": 2}
    return {"resolution": 64, "images": 4096, "batch": 256, "width": 64, "steps": 300, "log_every": 50}


# Sections run in this process.

def prepare_data(workdir: Path, size: dict[str, Any]) -> Path:
    sys.path.insert(0, str(HERE))
    from synthetic import write_image_folder

    from distgan.data.packed import pack_folder

    folder = write_image_folder(workdir / "images", size["images"], size["resolution"])
    return pack_folder(folder, workdir / "packed", 3, size["resolution"], num_workers=min(8, os.cpu_count() or 1)).path


def train_runs(args: argparse.Namespace, packed: Path, workdir: Path) -> list[dict[str, Any]]:
    size = sizes(args.cpu)
    variants = [("bf16", []), ("bf16", ["--compile"]), ("fp16", []), ("fp16", ["--compile"]),
                ("bf16", ["--compile", "--channels-last"])]
    if args.cpu:  # distgan rejects fp16 on the CPU, where Accelerate would silently train in float32
        variants = [variant for variant in variants if variant[0] != "fp16"]
    rows = []
    for precision, options in variants:
        run_dir = workdir / f"train-{precision}{''.join(options).replace('--', '-')}"
        command = [sys.executable, "-m", "distgan", "train", "--data", str(packed), "--model", "dcgan",
                   "--width", str(size["width"]), "--batch-size", str(size["batch"]), "--steps", str(size["steps"]),
                   "--log-every", str(size["log_every"]), "--sample-every", "0", "--checkpoint-every", "0",
                   "--no-ema", "--mixed-precision", precision, "--out", str(run_dir), *options]
        if args.cpu:
            command.append("--cpu")
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        wall = time.perf_counter() - start
        row: dict[str, Any] = {"run": f"{precision} {' '.join(options)}".strip(), "wall s": wall}
        if result.returncode != 0:
            rows.append({**row, "img/s": None, "passed": False, "error": result.stderr[-2000:]})
            continue
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        rates = [metric["images_per_second"] for metric in metrics[1:]] or [metrics[0]["images_per_second"]]
        finite = all(metric["Loss/D"] is not None and math.isfinite(metric["Loss/D"]) for metric in metrics)
        rows.append({**row, "img/s": sorted(rates)[len(rates) // 2], "Loss/D last": metrics[-1]["Loss/D"],
                     "passed": finite})
    return rows


def run_child(args: argparse.Namespace, name: str, workdir: Path, packed: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--workdir", str(workdir)]
    if args.cpu:
        command.append("--cpu")
    environment = {**os.environ, "DISTGAN_GPU_CHECK_DATA": str(packed)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, env=environment)
    lines = [line for line in result.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if result.returncode != 0 or not lines:
        return {"passed": False, "error": f"exit code {result.returncode}: {result.stderr[-2000:]}"}
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def overhead_section(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out = workdir / "overhead.json"
    command = [sys.executable, str(HERE / "overhead.py"), "--pairs", "dcgan", "--out", str(out)]
    if args.cpu:
        command += ["--device", "cpu", "--quick"]
    else:
        command += ["--device", "cuda", "--resolution", "64", "--channels", "3", "--mixed-precision", "bf16",
                    "--batch-size", "256", "--steps", "10", "--repeats", "12"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    if result.returncode != 0:
        return {"passed": False, "error": f"exit code {result.returncode}: {result.stderr[-2000:]}"}
    report = json.loads(out.read_text())
    # Only that the comparison ran is checked here; its ratio is a figure to record, not a pass condition.
    return {"passed": True, "rows": report["rows"], "notes": report["notes"]}


def inference_section(args: argparse.Namespace) -> dict[str, Any]:
    path = HERE / "inference.py"
    if not path.is_file():
        return {"passed": True, "skipped": f"{path} not found"}
    from distgan.bench import run_section

    return {"passed": True, "result": run_section(HERE, "inference", quick=args.cpu)}


# In-process checks, each run in a child process by run_child().

def _trainer(args: argparse.Namespace, precision: str, workdir: Path, steps: int) -> Any:
    from distgan.bench import start_trainer

    size = sizes(args.cpu)
    return start_trainer({
        "data": os.environ["DISTGAN_GPU_CHECK_DATA"], "model": "dcgan", "width": size["width"],
        "batch_size": size["batch"], "steps": steps, "mixed_precision": precision, "cpu": args.cpu, "ema": True,
        "log_every": steps, "sample_every": 0, "checkpoint_every": 0, "out": str(workdir / f"check-{precision}"),
    })


def sync_check(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available() or args.cpu:
        return {"passed": True, "skipped": "CUDA's sync debug mode needs a CUDA device"}
    counts = {}
    for precision in ("bf16", "fp16"):
        trainer = _trainer(args, precision, workdir, steps=10)
        for step in range(3):
            trainer.train_step(step)
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            for step in range(3, 8):
                trainer.train_step(step)
            torch.cuda.set_sync_debug_mode("default")
        trainer.close()
        messages = [str(warning.message).splitlines()[0] for warning in caught if "synchroniz" in str(warning.message)]
        counts[precision] = {"syncs in 5 steps": len(messages), "first": messages[:3]}
    return {"passed": counts["bf16"]["syncs in 5 steps"] == 0, "counts": counts}


def overflow_check(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import torch

    from distgan.step import MAX_OVERFLOW_RETRIES, SKIPPED

    if args.cpu or not torch.cuda.is_available():
        return {"passed": True, "skipped": "fp16 with a GradScaler needs a CUDA device"}
    trainer = _trainer(args, "fp16", workdir, steps=8)
    scaler = trainer.accelerator.scaler
    for step in range(2):
        trainer.train_step(step)
    tracker_before = int(scaler._growth_tracker.item())
    trainer.train_step(2)
    updates_per_step = int(scaler._growth_tracker.item()) - tracker_before

    def snapshot() -> dict[str, Any]:
        return {
            "D": [p.detach().clone() for p in trainer.D_inner.parameters()],
            "G": [p.detach().clone() for p in trainer.G_inner.parameters()],
            "D steps": [float(s["step"]) for s in trainer.opt_D.optimizer.state.values()],
            "G steps": [float(s["step"]) for s in trainer.opt_G.optimizer.state.values()],
        }

    # A scale that overflows fp16 (max 65504 = 2**16) for any gradient above 2**-8, yet comes back into
    # range within the halvings of one step: the overflowing attempts are repeated, not counted.
    recoverable_scale = 2.0**24
    scaler.update(new_scale=recoverable_scale)
    before = snapshot()
    stats = trainer.train_step(3)
    after = snapshot()
    scale_after_recovery = float(scaler.get_scale())
    checks = {
        "scaler updated once per optimizer step": updates_per_step == 2,
        "overflow lowered the scale within the step": scale_after_recovery < recoverable_scale,
        "step counted as progress": float(stats[SKIPPED]) == 0.0,
        "D stepped exactly once": all(b + 1 == a for b, a in zip(before["D steps"], after["D steps"])),
        "G stepped exactly once": all(b + 1 == a for b, a in zip(before["G steps"], after["G steps"])),
    }
    # A scale that MAX_OVERFLOW_RETRIES halvings cannot bring into range: the whole step is skipped.
    scaler.update(new_scale=2.0**100)
    before = snapshot()
    stats = trainer.train_step(4)
    after = snapshot()
    checks["hopeless overflow skips the step"] = float(stats[SKIPPED]) == 1.0
    checks["D weights unchanged"] = all(torch.equal(a, b) for a, b in zip(before["D"], after["D"]))
    checks["G weights unchanged"] = all(torch.equal(a, b) for a, b in zip(before["G"], after["G"]))
    checks["Adam step counts unchanged"] = before["D steps"] == after["D steps"] and before["G steps"] == after["G steps"]
    # Training goes on: the following steps lower the scale further until the updates succeed.
    recovered = None
    for step in range(5, 8):
        if float(trainer.train_step(step)[SKIPPED]) == 0.0:
            recovered = step
            break
    checks["training continues"] = recovered is not None
    trainer.close()
    return {"passed": all(checks.values()), "checks": checks, "scale after recovery": scale_after_recovery,
            "max retries per phase": MAX_OVERFLOW_RETRIES, "first good step after the hopeless one": recovered}


CHILDREN = {"sync": sync_check, "overflow": overflow_check}


def main() -> int:
    args = build_parser().parse_args()
    if args.child:
        result = CHILDREN[args.child](args, Path(args.workdir))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0

    import torch

    from distgan.bench import format_table, machine_info, write_json

    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device found; run on a GPU machine, or pass --cpu for the tiny CPU run", file=sys.stderr)
        return 1
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    report: dict[str, Any] = {"machine": machine_info(), "mode": "cpu smoke run" if args.cpu else "gpu",
                              "sections": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="distgan-gpu-check-") as workdir:
        workdir = Path(workdir)
        packed = prepare_data(workdir, sizes(args.cpu))
        sections = {
            "train": lambda: {"rows": train_runs(args, packed, workdir)},
            "sync": lambda: run_child(args, "sync", workdir, packed),
            "overflow": lambda: run_child(args, "overflow", workdir, packed),
            "overhead": lambda: overhead_section(args, workdir),
            "inference": lambda: inference_section(args),
        }
        for name, section in sections.items():
            if name in skipped:
                continue
            section_start = time.perf_counter()
            result = section()
            if name == "train":
                result["passed"] = all(row["passed"] for row in result["rows"])
            result["seconds"] = time.perf_counter() - section_start
            report["sections"][name] = result
            print(f"## {name}: {'passed' if result['passed'] else 'FAILED'} ({result['seconds']:.0f} s)")
            if "rows" in result:
                print(format_table([{k: v for k, v in row.items() if k != "error"} for row in result["rows"]]))
            printable = {k: v for k, v in result.items() if k not in ("rows", "passed", "seconds")}
            if printable:
                print(json.dumps(printable, indent=2, default=str)[:4000])
            print(flush=True)
    report["seconds"] = time.perf_counter() - started
    report["passed"] = all(section["passed"] for section in report["sections"].values())
    write_json(args.out, report)
    print(f"{'passed' if report['passed'] else 'FAILED'} in {report['seconds']:.0f} s; wrote {args.out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
