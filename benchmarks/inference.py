"""Inference speed of the exported DCGAN generator: onnxruntime against PyTorch eager.

For the DCGAN generator of the README's first run (MNIST 28x28, z_dim 64,
width 64), this measures the median latency and images per second of
PyTorch eager and of onnxruntime at batch 1 and 64. onnxruntime runs the
plain export and the --optimize variant under several session settings, and
the --fp16 and --int8 variants with the default settings. It counts the
generator's FLOPs from its layers and measures the float32 matmul peak of
the machine (the fastest of torch.mm, numpy and onnxruntime's MatMul). The
GFLOP/s that onnxruntime reaches at batch 64 is reported as a fraction of
that peak, on all threads and on one.

The targets are onnxruntime >= 3x PyTorch eager at batch 1, >= 1.2x at
batch 64, and >= 75% of the matmul peak at batch 64. Timings on a shared
machine are noisy: the configurations alternate in rounds, each latency is
the median of its least disturbed round, and the matmul peak is the fastest
call of all rounds.

    python benchmarks/inference.py [--run runs/mnist] [--rounds 9] [--out inference.json]
    python benchmarks/inference.py --device cuda    # onnxruntime's CUDA provider against PyTorch on the GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper
from torch import nn

from distgan.bench import script_main
from distgan.export import ExportOptions, export_generator, load_generator
from distgan.models import DCGANGenerator

BATCH_SIZES = (1, 64)
TARGET_SPEEDUP = {1: 3.0, 64: 1.2}  # onnxruntime / PyTorch eager images per second
TARGET_PEAK_FRACTION = 0.75  # onnxruntime GFLOP/s at batch 64 over the float32 matmul peak
MATMUL_SIZES = (1024, 2048)  # square float32 matrices; larger ones reach no higher rate on the 2-core CPU
MNIST_RECORD = {"kind": "image", "z_dim": 64, "sample_shape": [1, 28, 28], "value_range": [-1.0, 1.0],
                "layout": "NCHW", "weights": "untrained"}
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, help="Run directory whose generator to time; default: untrained weights, "
                                                 "which take the same time.")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="cpu, or cuda for onnxruntime's CUDA provider against PyTorch on the GPU; auto takes "
                             "cuda where torch sees a GPU (default: %(default)s).")
    parser.add_argument("--repeats", type=int, default=200,
                        help="Timed calls per configuration and round at batch 1, a tenth of them at batch 64 "
                             "(default: %(default)s).")
    parser.add_argument("--rounds", type=int, default=7, help="Alternating rounds over all configurations "
                                                              "(default: %(default)s).")
    parser.add_argument("--quick", action="store_true", help="Tiny sizes for a smoke run; the figures mean nothing.")
    parser.add_argument("--out", help="JSON file to write (default: inference.json).")
    return parser


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.repeats, args.rounds = 4, 1


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


def count_flops(generator: nn.Module, z_dim: int, device: torch.device) -> int:
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
        generator(torch.zeros(1, z_dim, device=device))
    for handle in handles:
        handle.remove()
    return total


def _onnxruntime_matmul(size: int, provider: str, threads: int = 0) -> Callable[[np.ndarray, np.ndarray], Any]:
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in "ab"],
                              [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: onnxruntime's default, one thread per core
    session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
    return lambda a, b: session.run(None, {"a": a, "b": b})


def matmul_runs(sizes: tuple[int, ...], device: torch.device, provider: str) -> dict[str, Callable[[], Any]]:
    """Return float32 square matrix products of torch.mm, numpy and onnxruntime's MatMul, keyed "LIBRARY SIZE".

    The fastest of them is this machine's float32 matmul peak with the
    libraries installed. torch's CPU wheel multiplies with MKL (BLAS_INFO=mkl
    in torch 2.13), which reached about half of onnxruntime's rate on the AMD
    CPU of BENCHMARKS.md, so one library alone can understate the peak. On a
    GPU only torch.mm runs, on the device, with TF32 off as torch's default.
    """
    runs: dict[str, Callable[[], Any]] = {}
    for size in sizes:
        a = np.random.default_rng(size).standard_normal((size, size), dtype=np.float32)
        b = np.random.default_rng(size + 1).standard_normal((size, size), dtype=np.float32)
        a_torch, b_torch = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
        runs[f"torch.mm {size}"] = lambda a_torch=a_torch, b_torch=b_torch: _synchronized(torch.mm(a_torch, b_torch))
        if device.type == "cpu":
            onnxruntime_matmul = _onnxruntime_matmul(size, provider)
            runs[f"numpy {size}"] = lambda a=a, b=b: a @ b
            runs[f"onnxruntime {size}"] = lambda a=a, b=b, matmul=onnxruntime_matmul: matmul(a, b)
    if device.type == "cpu":
        # One core's peak, for the 1-thread figures, which other processes on a shared machine disturb less.
        size = sizes[0]
        a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
        single_thread = _onnxruntime_matmul(size, provider, threads=1)
        runs[f"onnxruntime {size}, 1 thread"] = lambda: single_thread(a, a)
    return runs


def _synchronized(value: torch.Tensor) -> torch.Tensor:
    if value.is_cuda:
        torch.cuda.synchronize()
    return value


def session_settings(device: torch.device) -> dict[str, ort.SessionOptions]:
    """Return the onnxruntime session settings compared: the default and, on the CPU, two thread settings."""
    default = ort.SessionOptions()
    if device.type != "cpu":
        return {"default": default}

    no_spinning = ort.SessionOptions()
    no_spinning.add_session_config_entry("session.intra_op.allow_spinning", "0")

    single = ort.SessionOptions()
    single.intra_op_num_threads = 1
    return {"default": default, "no thread spinning": no_spinning, "1 thread": single}


def build_generator(run: Path | None) -> tuple[nn.Module, dict[str, Any]]:
    if run is not None:
        return load_generator(run)
    torch.manual_seed(0)
    return DCGANGenerator(z_dim=64, channels=1, resolution=28, width=64).eval(), dict(MNIST_RECORD)


def _sessions(report: Any, device: torch.device, provider: str) -> dict[str, ort.InferenceSession]:
    """Open every file of `report` on `provider`; every setting for the float32 files, the default for the rest."""
    sessions = {}
    for file in report.files:
        for name, options in session_settings(device).items():
            if file.variant not in ("float32", "optimized") and name != "default":
                continue
            session = ort.InferenceSession(str(file.path), options, providers=[provider])
            if session.get_providers()[0] != provider:
                raise RuntimeError(f"onnxruntime runs {file.path.name} on {session.get_providers()[0]}, not {provider}")
            sessions[f"{file.path.name}, {name}"] = session
    return sessions


def _rows(latencies: dict[str, float], batch_size: int, flops_per_image: int) -> dict[str, dict[str, float]]:
    return {name: {"median_ms": ms, "images_per_second": batch_size / (ms / 1000.0),
                   "gflops_per_second": flops_per_image * batch_size / (ms / 1000.0) / 1e9}
            for name, ms in latencies.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every figure; return the table rows, the targets and the raw figures as one JSON-ready dict."""
    apply_quick(args)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    provider = PROVIDERS[device.type]
    generator, record = build_generator(args.run)
    z_dim = int(record["z_dim"])
    folder = Path(tempfile.mkdtemp(prefix="distgan-bench-"))
    variants = ("optimized",) if args.quick else ("optimized", "fp16", "int8")
    report = export_generator(generator, record, folder / "generator.onnx", ExportOptions(variants=variants))
    generator = generator.to(device)
    flops_per_image = count_flops(generator, z_dim, device)
    sessions = _sessions(report, device, provider)
    matmul_sizes = (256,) if args.quick else MATMUL_SIZES

    rng = np.random.default_rng(0)
    batches: dict[str, Any] = {}
    matmul: dict[str, float] = {}
    for batch_size in BATCH_SIZES:
        z = rng.standard_normal((batch_size, z_dim), dtype=np.float32)
        z_torch = torch.from_numpy(z).to(device)

        def eager() -> torch.Tensor:
            with torch.inference_mode():
                return _synchronized(generator(z_torch))

        runs: dict[str, Callable[[], Any]] = {"PyTorch eager": eager}
        for name, session in sessions.items():
            runs[f"onnxruntime, {name}"] = (lambda session=session: session.run(None, {"z": z}))
        if batch_size == max(BATCH_SIZES):
            # The peak is measured in the same rounds, so it runs under the same load as the generator.
            runs.update({f"matmul {name}": call for name, call in matmul_runs(matmul_sizes, device, provider).items()})
        block = args.repeats if batch_size == 1 else max(2, args.repeats // 10)
        timings = interleaved_latencies_ms(runs, block, args.rounds)
        if device.type == "cpu":
            # torch's thread count is global, so its 1-thread rounds run apart from the others.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                timings.update(interleaved_latencies_ms({"PyTorch eager, 1 thread": eager}, block, args.rounds))
            finally:
                torch.set_num_threads(threads)

        for name, blocks in timings.items():
            if name.startswith("matmul "):
                size = int(name.removeprefix("matmul ").split()[1].rstrip(","))
                # A peak is the best rate reached, so it takes the fastest call of all rounds.
                matmul[name.removeprefix("matmul ")] = 2 * size**3 / (min(map(min, blocks)) / 1000.0) / 1e9
        latencies = {name: least_disturbed_median(blocks) for name, blocks in timings.items()
                     if not name.startswith("matmul ")}
        rows = _rows(latencies, batch_size, flops_per_image)
        # The fp16 and int8 files compute other values, so they do not compete in the float32 comparison.
        float32_names = [name for name in rows if name.startswith("onnxruntime")
                         and ".fp16." not in name and ".int8." not in name]
        best = min(float32_names, key=lambda name: rows[name]["median_ms"])
        batch = {"rows": rows, "best_onnxruntime": best, "target_speedup": TARGET_SPEEDUP[batch_size],
                 "speedup": rows["PyTorch eager"]["median_ms"] / rows[best]["median_ms"]}
        single = [name for name in float32_names if name.endswith("1 thread")]
        if single and "PyTorch eager, 1 thread" in rows:
            best_single = min(single, key=lambda name: rows[name]["median_ms"])
            batch["speedup_1_thread"] = rows["PyTorch eager, 1 thread"]["median_ms"] / rows[best_single]["median_ms"]
        batches[str(batch_size)] = batch

    single_peak = next((value for name, value in matmul.items() if name.endswith("1 thread")), None)
    peak = max(value for name, value in matmul.items() if not name.endswith("1 thread"))
    largest = batches[str(max(BATCH_SIZES))]
    achieved = largest["rows"][largest["best_onnxruntime"]]["gflops_per_second"]
    results: dict[str, Any] = {
        "title": f"Inference: onnxruntime ({provider}) against PyTorch eager, DCGAN generator for MNIST",
        "device": device.type,
        "method": f"lowest median of {args.rounds} alternating rounds; matmul peak: fastest call",
        "batches": batches,
        "matmul_gflops": {**matmul, "peak": peak},
        "peak_fraction_at_64": achieved / peak,
        "target_peak_fraction": TARGET_PEAK_FRACTION,
        "model": {"name": "DCGAN generator, MNIST 28x28, z_dim 64, width 64", "weights": record.get("weights"),
                  "mflops_per_image": flops_per_image / 1e6,
                  "onnx_file_bytes": {file.path.name: file.file_size for file in report.files},
                  "max_abs_diff_from_pytorch": {file.path.name: file.max_abs_diff for file in report.files},
                  "mean_abs_diff_from_pytorch": {file.path.name: file.mean_abs_diff for file in report.files}},
    }
    if single_peak is not None:
        single_rows = [row for name, row in largest["rows"].items() if name.endswith("1 thread")
                       and name.startswith("onnxruntime")]
        results["matmul_gflops"]["peak_1_thread"] = single_peak
        results["peak_fraction_at_64_1_thread"] = max(row["gflops_per_second"] for row in single_rows) / single_peak

    results["rows"] = [{"batch": int(batch_size), "runtime": name, "median ms": row["median_ms"],
                        "images/s": row["images_per_second"], "GFLOP/s": row["gflops_per_second"]}
                       for batch_size, batch in batches.items() for name, row in batch["rows"].items()]
    results["tables"] = [
        {"title": "Targets", "rows": _target_rows(results)},
        {"title": "float32 matmul GFLOP/s (fastest call)",
         "rows": [{"library and size": name, "GFLOP/s": value} for name, value in results["matmul_gflops"].items()]},
    ]
    results["notes"] = [f"{flops_per_image / 1e6:.2f} MFLOP per image, counted from the layers",
                        results["method"]]
    if device.type == "cuda":
        # NOTE: this path has not run on a GPU yet. onnxruntime's timings include copying z to the device and
        # the images back, which PyTorch eager, holding both on the device, does not pay.
        results["notes"].append("onnxruntime times include the host-device copies of z and the images; "
                                "PyTorch eager keeps both on the GPU")
    if args.quick:
        results["notes"].append("--quick: tiny repeat counts, the figures mean nothing")
    return results


def _target_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for batch_size, batch in results["batches"].items():
        rows.append({"target": f"onnxruntime / PyTorch eager at batch {batch_size} >= {batch['target_speedup']}x",
                     "measured": batch["speedup"], "met": "yes" if batch["speedup"] >= batch["target_speedup"] else "no",
                     "with 1 thread each": batch.get("speedup_1_thread")})
    fraction = results["peak_fraction_at_64"]
    rows.append({"target": f"onnxruntime GFLOP/s at batch 64 >= {TARGET_PEAK_FRACTION:.0%} of the matmul peak",
                 "measured": fraction, "met": "yes" if fraction >= TARGET_PEAK_FRACTION else "no",
                 "with 1 thread each": results.get("peak_fraction_at_64_1_thread")})
    return rows


if __name__ == "__main__":
    script_main("inference", build_parser, run)
