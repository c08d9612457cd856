"""The `distgan` command line: thin commands over the library.

Heavy modules (torch, accelerate, onnxruntime) are imported inside the
commands, so `distgan --help` is fast and `distgan sample` never loads torch.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from distgan import __version__
from distgan.config import TrainConfig
from distgan.errors import DistganError

app = typer.Typer(
    name="distgan",
    help="Train GANs with Hugging Face Accelerate and export the generator to validated ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
# Packages that the torch-free runtime install may lack; every command but sample needs them.
OPTIONAL_STACK = ("torch", "accelerate", "onnx", "onnxscript", "safetensors", "tqdm")


def _default(key: str) -> str:
    """Return the TrainConfig default of `key` as help text shows it (the options themselves default to None)."""
    return str(TrainConfig.__dataclass_fields__[key].default)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _report_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a DistganError into one line on stderr and exit code 1; other ranks stay quiet."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except DistganError as error:
            # Most errors come from the same input on every rank, so one line is enough. An error that only
            # some ranks raise (a lost peer) is printed by each of them.
            if _rank() == 0 or error.rank_specific:
                typer.echo(f"error: {error}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except ModuleNotFoundError as error:
            if error.name not in OPTIONAL_STACK:
                raise
            typer.echo(f"error: distgan {command.__name__} needs {error.name}, which is not installed; install "
                       "distgan with its dependencies (pip install distgan). Only distgan sample runs without torch.",
                       err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except OSError as error:
            if error.filename is None:
                raise
            # Files the user named or their folders: read-only, missing, full or of the wrong type.
            typer.echo(f"error: cannot write or read {error.filename}: {error.strerror}; check the path, its "
                       "permissions and the free space", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"distgan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = None,
) -> None:
    """Train GANs with Hugging Face Accelerate and export the generator to validated ONNX."""


@app.command()
@_report_errors
def train(
    config: Annotated[Optional[Path], typer.Option(help="TOML file of config keys; command-line options win.")] = None,
    data: Annotated[Optional[str], typer.Option(help="mnist (default), ring8, grid25, a folder of PNG/JPEG images, or a data set written by distgan prepare.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run name; default: the data set's name.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Run directory; default: runs/<name>.")] = None,
    model: Annotated[Optional[str], typer.Option(help="auto, dense or dcgan; auto picks dcgan for images, dense for 2D.")] = None,
    resolution: Annotated[Optional[int], typer.Option(help="Image side in pixels; default: 28 for mnist, 64 for folders.")] = None,
    channels: Annotated[Optional[int], typer.Option(help="1 (grayscale) or 3 (RGB).")] = None,
    z_dim: Annotated[Optional[int], typer.Option(help="Latent size; default 64 for images, 2 for 2D data.")] = None,
    width: Annotated[Optional[int], typer.Option(help="Base layer width of G and D; default 32 (dcgan), 256 (dense).")] = None,
    depth: Annotated[Optional[int], typer.Option(help="dcgan: extra 3x3 convolutions after each hidden layer, 0 to 16, default 1 (0 gives the DCGAN of the paper); dense: hidden layers, 1 to 16, default 4 for 2D data, 3 for images.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Global batch size, split evenly over all processes; default 128 for images, 256 for 2D data.")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Total training steps (one D and one G update each); default 3,500 for images, 60,000 for 2D data.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help=f"Micro-batches per optimizer step; each step trains on grad_accum x batch_size samples; default {_default('grad_accum')}.")] = None,
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn", metavar="", help="BatchNorm statistics over the global batch of all processes instead of each process's share.")] = None,
    fsdp: Annotated[Optional[bool], typer.Option("--fsdp", metavar="", help="Shard G, D, G_ema and the optimizer states over all processes with FSDP (torch's fully_shard); on by itself under an Accelerate FSDP config.")] = None,
    r1_gamma: Annotated[Optional[float], typer.Option(help="Weight gamma of the R1 penalty on real data; 0 turns it off; default: per loss and data kind, see the README.")] = None,
    r1_every: Annotated[Optional[int], typer.Option(help=f"Steps between R1 penalties (lazy regularization, weight scaled to match); default {_default('r1_every')}.")] = None,
    gp_weight: Annotated[Optional[float], typer.Option(help=f"Weight of the gradient penalty of --loss wgan-gp; default {_default('gp_weight')}.")] = None,
    spectral_norm: Annotated[Optional[bool], typer.Option("--spectral-norm/--no-spectral-norm", help=f"Spectral normalization on every layer of D (never on G); default {_default('spectral_norm')}.")] = None,
    augment: Annotated[Optional[str], typer.Option(help="Differentiable augmentation of the images D sees: a comma-separated list of color, translation, cutout; default: none.")] = None,
    conditional: Annotated[Optional[bool], typer.Option("--conditional/--no-conditional", help="Condition G and D on the class labels (MNIST digits, or the top-level subfolders of an image folder).")] = None,
    max_skipped_steps: Annotated[Optional[int], typer.Option(help=f"Consecutive steps with non-finite losses after which training stops; 0 never stops; default {_default('max_skipped_steps')}.")] = None,
    lr_g: Annotated[Optional[float], typer.Option(help="Adam learning rate of G; default 5e-4.")] = None,
    lr_d: Annotated[Optional[float], typer.Option(help="Adam learning rate of D; default 5e-4.")] = None,
    lr_decay_start: Annotated[Optional[float], typer.Option(help="Fraction of --steps after which both learning rates fall linearly towards 0 at the last step; 1 turns decay off; default 1 for images, 0.3 for 2D data.")] = None,
    beta1: Annotated[Optional[float], typer.Option(help="Adam beta1 of both optimizers; default 0 for images, 0.5 for 2D data.")] = None,
    beta2: Annotated[Optional[float], typer.Option(help="Adam beta2 of both optimizers; default 0.99 for images, 0.999 for 2D data.")] = None,
    loss: Annotated[Optional[str], typer.Option(help=f"logistic (non-saturating), hinge, lsgan or wgan-gp; default {_default('loss')}.")] = None,
    seed: Annotated[Optional[int], typer.Option(help=f"Seed of every random draw; default {_default('seed')}.")] = None,
    mixed_precision: Annotated[Optional[str], typer.Option(help="no, bf16 or fp16; default: the accelerate config's.")] = None,
    cpu: Annotated[Optional[bool], typer.Option("--cpu", metavar="", help="Train on the CPU even where a GPU is available.")] = None,
    ema: Annotated[Optional[bool], typer.Option("--ema/--no-ema", metavar="", help=f"Keep a moving average G_ema of G for samples and export; default {_default('ema')}.")] = None,
    ema_decay: Annotated[Optional[float], typer.Option(help=f"Decay of G_ema per step; default {_default('ema_decay')}.")] = None,
    log_every: Annotated[Optional[int], typer.Option(help=f"Steps between metrics.jsonl rows; default {_default('log_every')}.")] = None,
    sample_every: Annotated[Optional[int], typer.Option(help=f"Steps between sample grids; 0 turns them off; default {_default('sample_every')}.")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help=f"Steps between checkpoints; 0 saves only at the end; default {_default('checkpoint_every')}.")] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option(help="Complete checkpoints to keep, newest first; the one the run resumed from also stays; 0 keeps all (default).")] = None,
    on_save_error: Annotated[Optional[str], typer.Option(help="stop (default): a checkpoint that cannot be written (a full disk) stops the run; continue: log it and try again at the next checkpoint. The last checkpoint always stops the run on failure.")] = None,
    collective_timeout: Annotated[Optional[int], typer.Option(help=f"Seconds a process waits for the others in a collective before it stops with an error (a lost node); default {_default('collective_timeout')}.")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help=f"DataLoader worker processes for image folders; default {_default('num_workers')}.")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", metavar="", help=f"Compile G and D with torch.compile (slower start, faster steps); default {_default('compile')}.")] = None,
    channels_last: Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", metavar="", help=f"Store convolution weights as NHWC (channels-last); default {_default('channels_last')}.")] = None,
    resume: Annotated[str, typer.Option(help="auto: continue the run in --out from its latest complete checkpoint if it has checkpoints, else start it; latest: continue, and fail if there is no checkpoint; never: start a new run, and fail if --out has checkpoints.")] = "auto",
) -> None:
    """Train a GAN. Run it plainly or under `accelerate launch -m distgan train ...`."""
    overrides = {key: value for key, value in locals().items() if key not in ("config", "resume")}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from distgan.run import discard_empty_run_dir, plan_run
    from distgan.trainer import Trainer

    plan = plan_run(config, overrides, resume)
    try:
        try:
            result = Trainer(plan.config, plan.data, resume_from=plan.resume_from).fit()
        except BaseException:
            if _rank() == 0:
                discard_empty_run_dir(plan)
            raise
    except KeyboardInterrupt:
        from distgan.checkpoint import latest_checkpoint

        if _rank() == 0:
            latest = latest_checkpoint(plan.config.run_dir)
            typer.echo(f"interrupted; the latest complete checkpoint is {latest or 'none yet'}. Run the same "
                       "command again to resume from it.", err=True)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if _rank() == 0:
        typer.echo(f"done: step {result.step}, run directory {result.run_dir}")


def _export_options(opset: int, atol: float, exporter: str, postprocess: str, optimize: bool, fp16: bool,
                    int8: bool, fp16_atol: float, int8_atol: float) -> Any:
    from distgan.export import ExportOptions

    variants = tuple(name for name, wanted in (("optimized", optimize), ("fp16", fp16), ("int8", int8)) if wanted)
    return ExportOptions(opset=opset, atol=atol, exporter=exporter, postprocess=postprocess, variants=variants,
                         fp16_atol=fp16_atol, int8_atol=int8_atol)


@app.command()
@_report_errors
def prepare(
    source: Annotated[Path, typer.Argument(metavar="SRC", help="Folder of PNG/JPEG images; subfolders name the classes.")],
    destination: Annotated[Path, typer.Argument(metavar="DST", help="Directory to create with the packed data set.")],
    resolution: Annotated[int, typer.Option(help="Image side in pixels after resize and center crop.")] = 64,
    channels: Annotated[int, typer.Option(help="1 (grayscale) or 3 (RGB).")] = 3,
    num_workers: Annotated[Optional[int], typer.Option(help="Decoding processes; 0 decodes in this process; default: one per CPU core.")] = None,
) -> None:
    """Decode an image folder once into a packed data set that `distgan train --data DST` memory-maps."""
    from distgan.data.packed import pack_folder
    from distgan.errors import ConfigError

    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels}")
    if resolution < 1:
        raise ConfigError(f"resolution must be at least 1, got {resolution}")
    if num_workers is None:
        num_workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers < 0:
        raise ConfigError(f"num_workers must be 0 (decode in this process) or more, got {num_workers}")
    report = pack_folder(source, destination, channels, resolution, num_workers=num_workers)
    classes = f"{len(report.class_names)} classes" if report.class_names else "no classes"
    typer.echo(f"wrote {report.path}: {report.count} images of shape {report.sample_shape}, {classes}, "
               f"{report.size_bytes / 1e6:.1f} MB, sha256 {report.sha256}")


@app.command()
@_report_errors
def export(
    run: Annotated[Path, typer.Argument(help="Run directory, its generator/ folder, or one checkpoint directory.")],
    out: Annotated[Optional[Path], typer.Option(help="ONNX file to write; default: <run>/generator.onnx.")] = None,
    atol: Annotated[float, typer.Option(help="Largest accepted |onnxruntime - PyTorch| of the float32 and optimized files.")] = 1e-4,
    opset: Annotated[int, typer.Option(help="ONNX opset version, 13 or newer; default 18, the dynamo exporter's own.")] = 18,
    exporter: Annotated[str, typer.Option(help="auto (dynamo, then TorchScript if dynamo fails), dynamo or torchscript.")] = "auto",
    ema: Annotated[bool, typer.Option("--ema/--no-ema", metavar="", help="Export G_ema (default) or the raw generator G.")] = True,
    postprocess: Annotated[str, typer.Option(help="none, or uint8: the graph outputs uint8 pixels in NHWC order (batch, height, width, channels).")] = "none",
    optimize: Annotated[bool, typer.Option("--optimize", metavar="", help="Also write NAME.optimized.onnx beside NAME.onnx: faster forms of transposed convolutions, then onnxruntime's offline graph optimization.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", metavar="", help="Also write NAME.fp16.onnx beside NAME.onnx: float16 weights and compute, float32 inputs and outputs.")] = False,
    int8: Annotated[bool, typer.Option("--int8", metavar="", help="Also write NAME.int8.onnx beside NAME.onnx: static int8 quantization calibrated on random latents.")] = False,
    fp16_atol: Annotated[float, typer.Option(help="Largest accepted |fp16 - PyTorch| difference.")] = 2e-2,
    int8_atol: Annotated[float, typer.Option(help="Largest accepted |int8 - PyTorch| difference; the mean must also stay under 0.02.")] = 0.5,
) -> None:
    """Export a trained generator to ONNX, check it against PyTorch, and build optional variants."""
    from distgan.export import export_run

    options = _export_options(opset, atol, exporter, postprocess, optimize, fp16, int8, fp16_atol, int8_atol)
    report = export_run(run, out, raw=not ema, options=options)
    metadata = report.metadata
    typer.echo(f"wrote {report.path} ({report.file_size / 1e6:.2f} MB, {report.exporter} exporter, opset {report.opset}, "
               f"weights {metadata['weights']} at step {metadata['step']})")
    for note in report.notes:
        typer.echo(f"  note: {note}")
    typer.echo("  onnx.checker: passed")
    for result in report.parity:
        typer.echo(f"  batch {result.batch_size:>2}: max |onnxruntime - PyTorch| = {result.max_abs_diff:.2e} "
                   f"(tolerance {result.tolerance:.0e}) {'passed' if result.passed else 'FAILED'}")
    typer.echo(f"  batch independence: max |alone - in batch| = {report.files[0].batch_independence:.2e}")
    typer.echo(f"  metadata: z_dim={metadata['z_dim']} num_classes={metadata['num_classes']} "
               f"sample_shape={metadata['sample_shape']} value_range={metadata['value_range']} "
               f"layout={metadata['layout']} dtype={metadata['dtype']}")
    typer.echo(f"  {'file':<28} {'variant':<10} {'size MB':>8} {'max abs diff':>13} {'tolerance':>10} "
               f"{'mean abs diff':>14} {'ms/batch':>9} {'images/s':>9}")
    for file in report.files:
        speed = file.speed
        typer.echo(f"  {file.path.name:<28} {file.variant:<10} {file.file_size / 1e6:>8.2f} {file.max_abs_diff:>13.2e} "
                   f"{file.parity[0].tolerance:>10.2g} {file.mean_abs_diff:>14.2e} {speed.median_ms:>9.2f} "
                   f"{speed.images_per_second:>9.0f}")
    typer.echo(f"  (ms/batch: median onnxruntime CPU latency at batch {report.files[0].speed.batch_size})")


@app.command()
@_report_errors
def sample(
    onnx_file: Annotated[Path, typer.Argument(metavar="ONNX", help="An ONNX file written by distgan export.")],
    n: Annotated[int, typer.Option(help="Number of samples.")] = 64,
    seed: Annotated[int, typer.Option(help="Seed of the latents; the same seed gives the same images.")] = 0,
    out: Annotated[Path, typer.Option(help="PNG file to write; with --interpolate, a .gif suffix writes an animated GIF.")] = Path("samples.png"),
    providers: Annotated[str, typer.Option(help="auto, cpu or cuda; cuda fails when the session cannot use CUDA.")] = "auto",
    columns: Annotated[Optional[int], typer.Option(help="Images per row of the grid; default: near-square.")] = None,
    latents: Annotated[Optional[Path], typer.Option(help="A .npy file of float32 latents of shape (n, z_dim) to use instead of --seed; with --interpolate, its first and last rows are the endpoints.")] = None,
    label: Annotated[Optional[int], typer.Option(help="Class of every sample of a conditional generator; default: cycle through the classes (interpolation: class 0).")] = None,
    interpolate: Annotated[Optional[int], typer.Option(help="Write STEPS images along a spherical path between two latents instead of a grid.", metavar="STEPS")] = None,
    frame_ms: Annotated[int, typer.Option(help="Duration of one GIF frame in milliseconds.")] = 100,
    scale: Annotated[int, typer.Option(help="Enlarge every image by this integer factor (nearest neighbour).")] = 1,
) -> None:
    """Generate samples from an exported ONNX file with onnxruntime (no torch) and save a PNG grid, strip or GIF."""
    from distgan.errors import InputError
    from distgan.imaging import save_gif, save_grid, save_scatter
    from distgan.runtime import OnnxGenerator

    if scale < 1:
        raise InputError(f"--scale must be at least 1, got {scale}")
    if seed < 0:
        raise InputError(f"--seed must be 0 or more, got {seed}")
    if columns is not None and columns < 1:
        raise InputError(f"--columns must be at least 1, got {columns}")
    if out.is_dir():
        raise InputError(f"--out {out} is a directory; pass the path of the .png file to write")
    if out.suffix.lower() not in (".png", ".gif"):
        raise InputError(f"--out {out} must end in .png (a grid or strip) or .gif (an animated interpolation)")
    if frame_ms < 1:
        raise InputError(f"--frame-ms must be at least 1, got {frame_ms}")
    generator = OnnxGenerator(onnx_file, providers=providers)
    z = _read_latents(latents) if latents is not None else None
    if interpolate is not None:
        if generator.kind != "image":
            raise InputError(f"--interpolate needs an image generator; {onnx_file} generates {generator.kind}")
        endpoints = None if z is None else _endpoints(z, latents)
        samples = generator.interpolate(interpolate, seed=seed, labels=label, endpoints=endpoints)
        if out.suffix.lower() == ".gif":
            save_gif(samples, out, frame_ms, scale)
        else:
            save_grid(samples, out, columns=len(samples), scale=scale)
        typer.echo(f"wrote {out} ({len(samples)} interpolation steps of shape {list(samples.shape[1:])}, "
                   f"{generator.provider})")
        return
    if out.suffix.lower() == ".gif":
        raise InputError(f"{out}: an animated GIF needs --interpolate STEPS; write a grid to a .png file")
    if z is None:
        z = generator.latents(n, seed)
    labels = generator.default_labels(len(z)) if label is None else label
    samples = generator.generate(z, labels)
    if generator.kind == "image":
        save_grid(samples, out, columns, scale)
    else:
        save_scatter(samples, out)
    typer.echo(f"wrote {out} ({len(samples)} samples of shape {list(samples.shape[1:])}, {generator.provider})")


def _read_latents(path: Path) -> Any:
    import numpy as np

    from distgan.errors import InputError

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "pickled" in str(error):
            raise InputError(f"cannot read latents from {path}: it is not a plain .npy array (numpy would need to "
                             "load pickled data, which distgan never does); save the latents as a float32 array "
                             "with numpy.save") from None
        raise InputError(f"cannot read latents from {path}: {error}") from None
    except OSError as error:
        raise InputError(f"cannot read latents from {path}: {error}") from None


def _endpoints(z: Any, path: Path) -> Any:
    from distgan.errors import InputError

    if getattr(z, "ndim", 0) != 2 or len(z) < 2:
        raise InputError(f"--interpolate with --latents needs at least 2 latents in {path}, got shape "
                         f"{list(getattr(z, 'shape', []))}")
    return z[[0, -1]]


@app.command()
@_report_errors
def evaluate(
    source: Annotated[Path, typer.Argument(metavar="RUN_DIR_OR_ONNX", help="A run directory (or its generator/ folder, or a checkpoint) or an ONNX file written by distgan export.")],
    n: Annotated[int, typer.Option(help="Number of generated samples to measure; at least 2,500 for MNIST, the size of each real half that the Fréchet distance compares with.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed of the latents; the same seed measures the same samples.")] = 0,
    ema: Annotated[bool, typer.Option("--ema/--no-ema", help="Evaluate G_ema (default) or the raw generator G of the latest checkpoint; run directories only.")] = True,
    out: Annotated[Optional[Path], typer.Option(help="Folder for the JSON results and the PNG; default: <run>/evaluation.")] = None,
    data: Annotated[Optional[str], typer.Option(help="Real data for FID and KID; default: the data in the run's config.toml.")] = None,
    fid: Annotated[Optional[bool], typer.Option("--fid/--no-fid", help="Compute FID and KID with Inception-v3 (needs the fid extra and its weights on disk); default: on for image data other than mnist.")] = None,
    inception_weights: Annotated[Optional[Path], typer.Option(help="torch-fidelity's Inception-v3 weights file (weights-inception-2015-12-05-6726825d.pth).")] = None,
    batch_size: Annotated[int, typer.Option(help="Samples per forward pass.")] = 500,
    providers: Annotated[str, typer.Option(help="ONNX files only: auto, cpu or cuda.")] = "auto",
    cpu: Annotated[bool, typer.Option("--cpu", help="Under accelerate launch: run on the CPU even where a GPU is available.")] = False,
) -> None:
    """Measure a generator: mode coverage on 2D mixtures, classifier metrics on MNIST, FID and KID on images."""
    from distgan.evaluation.context import EvalContext
    from distgan.evaluation.evaluate import EvaluationRequest, run_evaluation

    request = EvaluationRequest(source=source, samples=n, seed=seed, raw=not ema, out=out, data=data, fid=fid,
                                inception_weights=inception_weights, providers=providers, batch_size=batch_size,
                                cpu=cpu)
    context = EvalContext(cpu)
    try:
        report = run_evaluation(request, context)
    finally:
        context.close()
    if report is not None:
        typer.echo(report.table)
        typer.echo(f"wrote {report.json_path} and {report.picture}")


@app.command()
@_report_errors
def bench(
    only: Annotated[Optional[str], typer.Option(help="Comma-separated sections to run: overhead, data, scaling, inference; default: all.")] = None,
    quick: Annotated[bool, typer.Option("--quick", metavar="", help="Tiny sizes, to check that every benchmark runs; the figures mean nothing.")] = False,
    out: Annotated[Path, typer.Option(help="JSON file to write with the results of every section.")] = Path("bench.json"),
    scripts: Annotated[Optional[Path], typer.Option(help="Folder of the benchmark scripts; default: ./benchmarks, else the one in distgan's source tree.")] = None,
) -> None:
    """Run the benchmarks in benchmarks/ and print a table per section (needs a distgan source checkout)."""
    from distgan.bench import default_scripts_dir, format_result, machine_info, parse_sections, run_section, write_json
    from distgan.errors import ConfigError

    sections = parse_sections(only)
    folder = scripts if scripts is not None else default_scripts_dir()
    if folder is None or not folder.is_dir():
        raise ConfigError(f"benchmark scripts not found{f' in {folder}' if folder else ''}; run from a distgan source "
                          "checkout, which has a benchmarks/ folder, or pass --scripts DIR")
    results: dict[str, Any] = {"machine": machine_info(), "quick": quick, "sections": {}}
    for name in sections:
        result = run_section(folder, name, quick)
        results["sections"][name] = result
        typer.echo(format_result(result) + "\n")
    write_json(out, results)
    typer.echo(f"wrote {out}")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="distgan")


if __name__ == "__main__":
    sys.exit(main())
