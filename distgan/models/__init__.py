"""Registry of generator/discriminator pairs and the JSON architecture record that rebuilds them.

An architecture record is a plain dict, `{"model": NAME, "generator": KWARGS,
"discriminator": KWARGS}`, saved with the weights so that export rebuilds the
generator from JSON and safetensors alone, without unpickling anything.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from distgan.config import MIN_DEPTH
from distgan.errors import ConfigError
from distgan.models.conditioning import check_num_classes
from distgan.models.dcgan import DCGANDiscriminator, DCGANGenerator, plan_resolution
from distgan.models.dense import DenseDiscriminator, DenseGenerator
from distgan.models.spectral import apply_spectral_norm, has_parametrizations

ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "dense": (DenseGenerator, DenseDiscriminator),
    "dcgan": (DCGANGenerator, DCGANDiscriminator),
}

# The dcgan defaults were measured on 28-pixel MNIST digits (BENCHMARKS.md): one extra convolution per
# resolution at width 32 trains as fast per step as the plain pair at width 64 and reaches a Fréchet
# distance several times lower. Larger images use them untested; their top layers are wider (width * 2**(n-1)).
DEFAULT_WIDTH = {"dense": 256, "dcgan": 32}
# Depth by model and data kind: the extra 3x3 convolutions per resolution of the dcgan pair, and the hidden
# layers of the dense pair. Four dense layers put more samples on the 2D modes than three (BENCHMARKS.md).
DEFAULT_DEPTH = {("dcgan", "image"): 1, ("dense", "image"): 3, ("dense", "points"): 4}


def default_depth(model: str, kind: str) -> int:
    """Return the depth that a run of `model` on data of `kind` ("image" or "points") gets by default."""
    return DEFAULT_DEPTH[model, kind]


def dense_hidden(kind: str, width: int, depth: int) -> list[int]:
    """Return the hidden layer sizes of the dense generator. The discriminator takes them in reverse.

    For images the sizes double over the first three layers (width, 2 x width, 4 x width) and stay at
    4 x width after that. For points every layer has `width` units.
    """
    if kind == "image":
        return [width * 2 ** min(layer, 2) for layer in range(depth)]
    return [width] * depth


def default_model(kind: str) -> str:
    """Return the model that `--model auto` picks for a data kind ("image" or "points")."""
    return "dcgan" if kind == "image" else "dense"


def _checked_depth(model: str, kind: str, depth: int | None) -> int:
    depth = default_depth(model, kind) if depth is None else depth
    if depth < MIN_DEPTH[model]:
        raise ConfigError(f"the {model} model needs a depth of at least {MIN_DEPTH[model]}, got {depth}")
    return depth


def default_architecture(model: str, kind: str, sample_shape: list[int], z_dim: int, width: int,
                         num_classes: int = 0, depth: int | None = None) -> dict[str, Any]:
    """Build the architecture record of a built-in pair for samples of `sample_shape`.

    `num_classes` > 0 makes both networks class-conditional. `depth` is the
    number of extra 3x3 convolutions per resolution of the dcgan pair and
    the number of hidden layers of the dense pair; None takes
    default_depth(model, kind). Raises ConfigError when the model cannot
    produce that shape, for a depth below the model's minimum, or for a
    num_classes of 1 or less than 0.
    """
    check_num_classes(num_classes)
    if model == "dense":
        hidden = dense_hidden(kind, width, _checked_depth(model, kind, depth))
        generator = {"z_dim": z_dim, "out_shape": list(sample_shape), "hidden": hidden,
                     "output": "tanh" if kind == "image" else "linear"}
        discriminator = {"in_shape": list(sample_shape), "hidden": list(reversed(hidden))}
    elif model == "dcgan":
        if kind != "image" or len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
            raise ConfigError(f"the dcgan model needs square images, but the data has samples of shape {sample_shape}; "
                              "use --model dense")
        channels, resolution = sample_shape[0], sample_shape[1]
        try:
            plan_resolution(resolution)
        except ValueError as error:
            raise ConfigError(f"{error}; set --resolution (a packed data set keeps the resolution it was packed at: "
                              "run distgan prepare again with --resolution), or use --model dense") from None
        depth = _checked_depth(model, kind, depth)
        generator = {"z_dim": z_dim, "channels": channels, "resolution": resolution, "width": width, "depth": depth}
        discriminator = {"channels": channels, "resolution": resolution, "width": width, "depth": depth}
    else:
        raise ConfigError(f"unknown model '{model}'; choose one of {', '.join(ARCHITECTURES)}")
    generator["num_classes"] = discriminator["num_classes"] = num_classes
    return {"model": model, "generator": generator, "discriminator": discriminator}


def _architecture_classes(record: dict[str, Any]) -> tuple[type[nn.Module], type[nn.Module]]:
    model = record.get("model")
    if model not in ARCHITECTURES:
        raise ValueError(f"unknown model {model!r} in architecture record; known models: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model]


def build_generator(record: dict[str, Any]) -> nn.Module:
    """Construct the generator described by an architecture record (fresh weights)."""
    generator_class, _ = _architecture_classes(record)
    return generator_class(**record["generator"])


def build_discriminator(record: dict[str, Any]) -> nn.Module:
    """Construct the discriminator described by an architecture record (fresh weights)."""
    _, discriminator_class = _architecture_classes(record)
    return discriminator_class(**record["discriminator"])


__all__ = [
    "ARCHITECTURES",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "DEFAULT_DEPTH",
    "DEFAULT_WIDTH",
    "MIN_DEPTH",
    "DenseDiscriminator",
    "DenseGenerator",
    "apply_spectral_norm",
    "build_discriminator",
    "build_generator",
    "default_architecture",
    "default_depth",
    "default_model",
    "dense_hidden",
    "has_parametrizations",
]
