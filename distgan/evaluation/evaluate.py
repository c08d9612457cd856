"""`distgan evaluate`: measure a trained generator and write the results into its run directory.

The generator is a run directory (G_ema by default, G with raw=True) or an
exported ONNX file. The metrics depend on the data it was trained on:

- ring8 and grid25: mode coverage, high-quality samples and reverse KL
  (distgan.evaluation.mixtures), with a scatter plot over the mode centres.
- mnist: class coverage, class-histogram KL and the classifier Fréchet
  distance against its real-vs-real floor (distgan.evaluation.digits).
- any image data: FID and KID with Inception-v3 features
  (distgan.evaluation.inception), on by default for image data other than
  mnist, and a grid of samples.

The results go to <run>/evaluation/<tag>.json and a PNG beside it, where the
tag is G_ema, G, or the stem of the ONNX file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from distgan.errors import EvaluationError
from distgan.evaluation.context import EvalContext
from distgan.evaluation.mixtures import mixture_metrics
from distgan.evaluation.report import format_table, table_rows, write_json
from distgan.evaluation.sources import GeneratorInfo, Sampler, balanced_labels, generate, latents, open_sampler
from distgan.imaging import save_grid, save_scatter

DEFAULT_SAMPLES = 10_000
GRID_IMAGES = 64
SCATTER_POINTS = 5_000
EVALUATION_DIR = "evaluation"


@dataclass
class EvaluationRequest:
    """The options of one evaluation; see `distgan evaluate --help`."""

    source: Path
    samples: int = DEFAULT_SAMPLES
    seed: int = 0
    raw: bool = False
    out: Path | None = None
    data: str | None = None  # the real data for FID and KID; default: the run's training data
    fid: bool | None = None  # None: on for image data other than mnist
    inception_weights: Path | None = None
    providers: str = "auto"
    batch_size: int = 500
    cpu: bool = False


@dataclass
class EvaluationResult:
    """The measurements of an evaluation and the files it wrote (main process only)."""

    result: dict[str, Any]
    table: str
    json_path: Path
    picture: Path


def _check_request(request: EvaluationRequest) -> None:
    if request.samples < 2:
        raise EvaluationError(f"--n must be at least 2 samples, got {request.samples}")
    if request.batch_size < 1:
        raise EvaluationError(f"--batch-size must be at least 1, got {request.batch_size}")


def _real_digits(samples: int) -> np.ndarray:
    """Return the embedded MNIST digits, or raise EvaluationError when `samples` is below one real half."""
    from distgan.data.mnist import load_mnist
    from distgan.evaluation.digits import real_halves

    pixels, _ = load_mnist()
    half = len(real_halves(len(pixels))[0])
    if samples < half:
        raise EvaluationError(f"the MNIST Fréchet distance compares {half:,} generated digits with real ones; "
                              f"pass --n {half} or more (got {samples})")
    return pixels


def _tag(request: EvaluationRequest, info: GeneratorInfo) -> str:
    if request.source.is_file():
        return request.source.stem
    return info.weights or ("G" if request.raw else "G_ema")


def _mixture(info: GeneratorInfo, points: np.ndarray, picture: Path) -> dict[str, Any]:
    from distgan.data.mixtures import MIXTURES, get_mixture

    if info.data not in MIXTURES:
        raise EvaluationError(f"no metrics for 2D data '{info.data}': mode metrics exist for "
                              f"{', '.join(MIXTURES)}")
    mixture = get_mixture(info.data)
    centers = mixture.centers.numpy()
    save_scatter(points[:SCATTER_POINTS], picture, centers)
    return mixture_metrics(points, centers, mixture.std).to_dict()


def _digits(context: EvalContext, images: np.ndarray, labels: np.ndarray | None, batch_size: int,
            pixels: np.ndarray) -> dict[str, Any]:
    import torch

    from distgan.data.sources import pixels_to_float
    from distgan.evaluation.classifier import describe, load_classifier
    from distgan.evaluation.digits import classify, digit_metrics, real_halves

    classifier, metadata = load_classifier()
    classifier.to(context.device)
    features, probabilities = classify(classifier, images, batch_size, context.device)
    features, probabilities = context.gather(features), context.gather(probabilities)

    rows = context.shard(len(pixels))
    real = pixels_to_float(torch.from_numpy(pixels[rows.start : rows.stop])).numpy()
    real_features = context.gather(classify(classifier, real, batch_size, context.device)[0])
    half_a, half_b = real_halves(len(pixels))
    metrics = digit_metrics(features, probabilities, real_features[half_a], real_features[half_b], labels)
    return {**metrics.to_dict(), "classifier": describe(metadata)}


def _real_images(data: str, info: GeneratorInfo, count: int, rows: range) -> np.ndarray:
    """Return rows `rows` of `count` real images, uint8 [n, C, H, W], at the generator's sample shape."""
    from distgan.data import open_data
    from distgan.data.folder import decode_file

    channels, resolution = info.sample_shape[0], info.sample_shape[1]
    dataset = open_data(data, resolution, channels)
    # The first `count` images of a fixed permutation, so a subset is spread over the whole data set.
    order = np.random.default_rng(0).permutation(dataset.size)[:count]
    chosen = order[rows.start : rows.stop]
    if dataset.pixels is not None:
        return dataset.pixels[chosen]
    if dataset.packed is not None:
        return np.stack([dataset.packed.pixels[index] for index in chosen])
    return np.stack([decode_file(dataset.folder.files[index], channels, resolution) for index in chosen])


def _inception_extractor(context: EvalContext, request: EvaluationRequest,
                         info: GeneratorInfo) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """Return the real data and the Inception feature function, or raise before any sample is generated."""
    from distgan.evaluation.inception import find_weights, load_extractor

    data = request.data or info.data_path
    if not data:
        raise EvaluationError("FID and KID compare with the real data, which this generator does not name; "
                              "pass --data PATH (the folder or packed data set it was trained on)")
    return data, load_extractor(find_weights(request.inception_weights), context.device)


def _inception(context: EvalContext, request: EvaluationRequest, info: GeneratorInfo, images: np.ndarray,
               data: str, extract: Callable[[np.ndarray], np.ndarray]) -> dict[str, Any]:
    from distgan.data import open_data
    from distgan.evaluation.frechet import features_frechet_distance, kernel_distance
    from distgan.evaluation.inception import to_uint8_rgb

    def features_of(uint8_images: np.ndarray) -> np.ndarray:
        parts = [extract(uint8_images[start : start + request.batch_size])
                 for start in range(0, len(uint8_images), request.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 2048), np.float32)

    generated = context.gather(features_of(to_uint8_rgb(images)))
    size = open_data(data, info.sample_shape[1], info.sample_shape[0]).size or 0
    count = min(size, request.samples)
    real_rows = context.shard(count)
    real = _real_images(data, info, count, real_rows)
    real = np.repeat(real, 3, axis=1) if real.shape[1] == 1 else real
    real_features = context.gather(features_of(real))
    kid_mean, kid_std = kernel_distance(generated, real_features)
    return {"fid": features_frechet_distance(generated, real_features), "kid_mean": kid_mean, "kid_std": kid_std,
            "real_images": count, "data": data}


def _grid(sampler: Sampler, info: GeneratorInfo, z: np.ndarray, picture: Path) -> None:
    columns = info.num_classes or None
    count = GRID_IMAGES if not columns else columns * max(1, round(GRID_IMAGES / columns))
    count = min(count, len(z))
    images = generate(sampler, range(count), z, balanced_labels(len(z), info.num_classes), count)
    save_grid(images, picture, columns)


def run_evaluation(request: EvaluationRequest, context: EvalContext) -> EvaluationResult | None:
    """Evaluate the generator of `request.source`; return the result on the main process, None elsewhere.

    Raises EvaluationError for options that do not fit the generator or its
    data, and CheckpointError or InputError for an unreadable source.
    """
    _check_request(request)
    started = time.perf_counter()
    sampler = open_sampler(request.source, request.raw, request.providers)
    info = sampler.info
    # Read before any sample is generated, so that too small an --n is rejected before anything is written.
    real_digits = _real_digits(request.samples) if info.kind == "image" and info.data == "mnist" else None
    tag = _tag(request, info)
    out_dir = request.out or sampler.output_dir / EVALUATION_DIR
    fid = info.kind == "image" and (request.fid if request.fid is not None else info.data != "mnist")
    if request.fid and info.kind != "image":
        raise EvaluationError("FID and KID apply to images, but this generator makes 2D points; remove --fid")
    inception = _inception_extractor(context, request, info) if fid else None
    z = latents(request.samples, info.z_dim, request.seed)
    labels = balanced_labels(request.samples, info.num_classes)
    local = generate(sampler, context.shard(request.samples), z, labels, request.batch_size)

    metrics: dict[str, Any] = {}
    if info.kind == "points":
        picture = out_dir / f"{tag}-scatter.png"
        points = context.gather(local)
        if context.is_main_process:
            metrics["mixture"] = _mixture(info, points, picture)
    else:
        picture = out_dir / f"{tag}-samples.png"
        if context.is_main_process:
            _grid(sampler, info, z, picture)
        if real_digits is not None:
            metrics["digits"] = _digits(context, local, labels, request.batch_size, real_digits)
        if inception is not None:
            metrics["inception"] = _inception(context, request, info, local, *inception)
    if not context.is_main_process:
        return None

    result = {
        "source": str(request.source),
        "weights": tag,
        "step": info.step,
        "data": info.data,
        "kind": info.kind,
        "num_classes": info.num_classes,
        "samples": request.samples,
        "seed": request.seed,
        "processes": context.world_size,
        "seconds": round(time.perf_counter() - started, 2),
        "metrics": metrics,
        "picture": picture.name,
    }
    json_path = write_json(out_dir / f"{tag}.json", result)
    title = (f"{request.source}: {tag} at step {info.step}, {request.samples:,} samples, seed {request.seed}, "
             f"data {info.data}")
    return EvaluationResult(result, format_table(title, table_rows(metrics)), json_path, picture)
