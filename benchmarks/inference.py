"""Inference speed of the exported DCGAN generator: onnxruntime versus PyTorch eager on this CPU.

    python benchmarks/inference.py [--run runs/mnist] [--repeats 200] [--out inference.json]

Measures, for the DCGAN generator of the README's first run (MNIST 28x28,
z_dim 64, width 64):

- the median latency and images per second of PyTorch eager and of
  onnxruntime at batch 1 and 64, for the plain export and the --optimize
  variant under several session settings, and the --fp16 and --int8
  variants with the default settings;
- the generator's FLOPs per image, counted from its layers;
- the float32 matmul peak of this machine (the fastest of torch.mm, numpy
  and onnxruntime's MatMul on square matrices);
- the GFLOP/s that onnxruntime achieves at batch 64 as a fraction of that peak.

Prints a table and writes every figure to a JSON file. The targets are
onnxruntime >= 3x PyTorch eager at batch 1, >= 1.2x at batch 64, and >= 75%
of the matmul peak at batch 64, and the table marks each as met or missed. Timings on a
shared machine are noisy: the configurations alternate in rounds, each
latency is the median of its least disturbed round, and the matmul peak is
the fastest call of all rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from distgan.export import ExportOptions, export_generator, load_generator
from distgan.models import DCGANGenerator

BATCH_SIZES = (1, 64)
TARGET_SPEEDUP = {1: 3.0, 64: 1.2}  # onnxruntime / PyTorch eager images per second
TARGET_PEAK_FRACTION = 0.75  # onnxruntime GFLOP/s at batch 64 over the float32 matmul peak
MATMUL_SIZES = (1024, 2048)  # square float32 matrices; larger ones reach no higher rate here
MNIST_RECORD = {"kind": "image", "z_dim": 64, "sample_shape": [1, 28, 28], "value_range": [-1.0, 1.0],
                "layout": "NCHW", "weights": "untrained"}


def latencies_ms(run: Callable[[], Any], repeats: int, warmup: int = 3) -> list[float]:
    """Return the wall times of `repeats` calls of `run()` in milliseconds, after `warmup` calls."""
    for _ in range(warmup):
        run()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append((time.perf_counter() - started) * 1000.0)
    return timings


def interleaved_latencies_ms(runs: dict[str, Callable[[], Any]], repeats: int, rounds: int
                             ) -> dict[str, list[list[float]]]:
    """Time each callable in `rounds` alternating blocks of `repeats` calls; return the timings per block.

    Alternating the blocks exposes every configuration to the same load from
    other processes on a shared machine.
    """
    timings: dict[str, list[list[float]]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            timings[name].append(latencies_ms(run, repeats))
    return timings


def least_disturbed_median(blocks: list[list[float]]) -> float:
    """Return the lowest median over blocks: the estimate of the code's own cost least inflated by other load."""
    return min(statistics.median(block) for block in blocks)


def count_flops(generator: nn.Module, z_dim: int) -> int:
    """Count multiply-adds x 2 of the convolution, transposed convolution and linear layers for one image.

    Normalization, activation and bias additions are left out: they are a
    fraction of a percent of a DCGAN generator's work.
    """
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        x = inputs[0]
        if isinstance(module, nn.ConvTranspose2d):
            # Every input pixel scatters a kernel-sized patch into each output channel.
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * x.shape[1] * (module.out_channels // module.groups) * kernel * x.shape[2] * x.shape[3]
        elif isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1]
            total += 2 * (x.shape[1] // module.groups) * kernel * output.shape[1] * output.shape[2] * output.shape[3]
        elif isinstance(module, nn.Linear):
            total += 2 * module.in_features * module.out_features

    handles = [module.register_forward_hook(hook) for module in generator.modules()
               if isinstance(module, (nn.ConvTranspose2d, nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        generator(torch.zeros(1, z_dim))
    for handle in handles:
        handle.remove()
    return total


def _onnxruntime_matmul(size: int, threads: int = 0) -> Callable[[np.ndarray, np.ndarray], Any]:
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, one thread per core
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return lambda a, b: session.run(None, {"a": a, "b": b})


def matmul_runs() -> dict[str, Callable[[], Any]]:
    """Return float32 square matrix products of torch.mm, numpy and onnxruntime's MatMul, keyed "LIBRARY SIZE".

    The fastest of them is this machine's float32 matmul peak with the
    libraries installed. torch's CPU wheel multiplies with MKL (BLAS_INFO=mkl
    in torch 2.13), which reached about half of onnxruntime's rate on the AMD
    CPU of BENCHMARKS.md, so one library alone can understate the peak.
    """
    runs: dict[str, Callable[[], Any]] = {}
    for size in MATMUL_SIZES:
        a = np.random.default_rng(size).standard_normal((size, size), dtype=np.float32)
        b = np.random.default_rng(size + 1).standard_normal((size, size), dtype=np.float32)
        a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
        onnxruntime_matmul = _onnxruntime_matmul(size)
        runs[f"torch.mm {size}"] = lambda a_torch=a_torch, b_torch=b_torch: torch.mm(a_torch, b_torch)
        runs[f"numpy {size}"] = lambda a=a, b=b: a @ b
        runs[f"onnxruntime {size}"] = lambda a=a, b=b, matmul=onnxruntime_matmul: matmul(a, b)
    # One core's peak, for the 1-thread figures, which other processes on a shared machine disturb less.
    a = np.random.default_rng(0).standard_normal((1024, 1024), dtype=np.float32)
    single_thread = _onnxruntime_matmul(1024, threads=1)
    runs["onnxruntime 1024, 1 thread"] = lambda: single_thread(a, a)
    return runs


def session_settings() -> dict[str, ort.SessionOptions]:
    """Return the onnxruntime session settings compared: the default and two thread settings."""
    default = ort.SessionOptions()

    no_spinning = ort.SessionOptions()
    no_spinning.add_session_config_entry("session.intra_op.allow_spinning", "0")

    single = ort.SessionOptions()
    single.intra_op_num_threads = 1
    return {"default": default, "no thread spinning": no_spinning, "1 thread": single}


def build_generator(run: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    if run is not None:
        generator, record = load_generator(run)
        return generator, record
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=64, channels=1, resolution=28, width=64).eval(), dict(MNIST_RECORD)


def benchmark(run: Path | None, repeats: int, rounds: int) -> dict[str, Any]:
    """Measure every figure; return them as one JSON-ready dict."""
    generator, record = build_generator(run)
    z_dim = int(record["z_dim"])
    folder = Path(tempfile.mkdtemp(prefix="distgan-bench-"))
    variants = ("optimized", "fp16", "int8")
    report = export_generator(generator, record, folder / "generator.onnx", ExportOptions(variants=variants))
    flops_per_image = count_flops(generator, z_dim)

    # Every setting for the float32 files; the fp16 and int8 files with the default one.
    sessions = {f"{file.path.name}, {name}": ort.InferenceSession(str(file.path), options,
                                                                  providers=["CPUExecutionProvider"])
                for file in report.files for name, options in session_settings().items()
                if file.variant in ("float32", "optimized") or name == "default"}
    rng = np.random.default_rng(0)
    results: dict[str, Any] = {"batches": {}, "method": f"lowest median of {rounds} alternating rounds; "
                                                         "matmul: fastest call"}
    for batch_size in BATCH_SIZES:
        z = rng.standard_normal((batch_size, z_dim), dtype=np.float32)
        z_torch = torch.from_numpy(z)

        def eager() -> torch.Tensor:
            with torch.inference_mode():
                return generator(z_torch)

        runs: dict[str, Callable[[], Any]] = {"PyTorch eager": eager}
        for name, session in sessions.items():
            runs[f"onnxruntime, {name}"] = (lambda session=session: session.run(None, {"z": z}))
        if batch_size == max(BATCH_SIZES):
            # The peak is measured in the same rounds, so it runs under the same load as the generator.
            runs.update({f"matmul {name}": call for name, call in matmul_runs().items()})
        block = repeats if batch_size == 1 else max(10, repeats // 10)
        timings = interleaved_latencies_ms(runs, block, rounds)
        # torch's thread count is global, so its 1-thread rounds run apart from the others.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            timings.update(interleaved_latencies_ms({"PyTorch eager, 1 thread": eager}, block, rounds))
        finally:
            torch.set_num_threads(threads)
        # A peak is the best rate reached, so the matmul figures take the fastest call of all rounds.
        matmul = {}
        for name, blocks in timings.items():
            if name.startswith("matmul "):
                size = int(name.removeprefix("matmul ").split()[1].rstrip(","))
                fastest_seconds = min(map(min, blocks)) / 1000.0
                matmul[name.removeprefix("matmul ")] = 2 * size**3 / fastest_seconds / 1e9
        if matmul:
            single = matmul.pop("onnxruntime 1024, 1 thread")
            results["matmul_gflops"] = {**matmul, "peak": max(matmul.values()), "peak_1_thread": single}
        latencies = {name: least_disturbed_median(blocks) for name, blocks in timings.items()
                     if not name.startswith("matmul ")}
        rows = {name: {"median_ms": ms, "images_per_second": batch_size / (ms / 1000.0),
                       "gflops_per_second": flops_per_image * batch_size / (ms / 1000.0) / 1e9}
                for name, ms in latencies.items()}
        # The fp16 and int8 files compute other values, so they do not compete for the float32 comparison.
        float32_rows = [name for name in rows if name.startswith("onnxruntime") and ".fp16." not in name
                        and ".int8." not in name]
        best_ort = min(float32_rows, key=lambda n: rows[n]["median_ms"])
        speedup = rows["PyTorch eager"]["median_ms"] / rows[best_ort]["median_ms"]
        single_rows = [name for name in float32_rows if name.endswith("1 thread")]
        best_single = min(single_rows, key=lambda n: rows[n]["median_ms"])
        single_speedup = rows["PyTorch eager, 1 thread"]["median_ms"] / rows[best_single]["median_ms"]
        results["batches"][str(batch_size)] = {"rows": rows, "best_onnxruntime": best_ort, "speedup": speedup,
                                               "target_speedup": TARGET_SPEEDUP[batch_size],
                                               "speedup_1_thread": single_speedup}

    peak = results["matmul_gflops"]["peak"]
    largest = results["batches"][str(max(BATCH_SIZES))]
    achieved = largest["rows"][largest["best_onnxruntime"]]["gflops_per_second"]
    single_thread = max(row["gflops_per_second"] for name, row in largest["rows"].items() if name.endswith("1 thread"))
    results.update({
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort.__version__,
                    "numpy": np.__version__, "torch_threads": torch.get_num_threads()},
        "model": {"name": "DCGAN generator, MNIST 28x28, z_dim 64, width 64", "weights": record.get("weights"),
                  "mflops_per_image": flops_per_image / 1e6,
                  "onnx_file_bytes": {file.path.name: file.file_size for file in report.files},
                  "max_abs_diff_from_pytorch": {file.path.name: file.max_abs_diff for file in report.files},
                  "mean_abs_diff_from_pytorch": {file.path.name: file.mean_abs_diff for file in report.files}},
        "peak_fraction_at_64": achieved / peak,
        "peak_fraction_at_64_1_thread": single_thread / results["matmul_gflops"]["peak_1_thread"],
        "target_peak_fraction": TARGET_PEAK_FRACTION,
    })
    return results


def print_table(results: dict[str, Any]) -> None:
    model = results["model"]
    print(f"{model['name']}: {model['mflops_per_image']:.2f} MFLOP per image")
    print(f"{'batch':>5}  {'runtime':<56} {'median ms':>10} {'images/s':>10} {'GFLOP/s':>8}")
    for batch_size, batch in results["batches"].items():
        for name, row in batch["rows"].items():
            marker = " <- best" if name == batch["best_onnxruntime"] else ""
            print(f"{batch_size:>5}  {name:<56} {row['median_ms']:>10.3f} {row['images_per_second']:>10.0f} "
                  f"{row['gflops_per_second']:>8.1f}{marker}")
    peak = results["matmul_gflops"]
    print("float32 matmul GFLOP/s: " + ", ".join(f"{name}: {value:.0f}" for name, value in peak.items()
                                                  if not name.startswith("peak")) + f"; peak {peak['peak']:.0f}")
    for batch_size, batch in results["batches"].items():
        met = "met" if batch["speedup"] >= batch["target_speedup"] else "MISSED"
        print(f"batch {batch_size}: onnxruntime / eager = {batch['speedup']:.2f}x (target {batch['target_speedup']}x, "
              f"{met}); with 1 thread each {batch['speedup_1_thread']:.2f}x")
    fraction = results["peak_fraction_at_64"]
    met = "met" if fraction >= results["target_peak_fraction"] else "MISSED"
    print(f"batch 64: onnxruntime reaches {fraction:.1%} of the matmul peak (target "
          f"{results['target_peak_fraction']:.0%}, {met})")
    print(f"batch 64, 1 thread: onnxruntime reaches {results['peak_fraction_at_64_1_thread']:.1%} of one thread's "
          f"matmul peak ({peak['peak_1_thread']:.0f} GFLOP/s)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="run directory whose generator to time; default: untrained weights")
    parser.add_argument("--repeats", type=int, default=200,
                        help="timed calls per configuration and round at batch 1 (a tenth of them at batch 64)")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds over all configurations")
    parser.add_argument("--out", type=Path, default=Path("inference.json"), help="JSON file to write")
    args = parser.parse_args(argv)
    results = benchmark(args.run, args.repeats, args.rounds)
    print_table(results)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
