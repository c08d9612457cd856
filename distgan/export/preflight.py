"""Checks on the PyTorch generator before conversion: it must be a pure function of its inputs.

A generator that draws its own noise in forward() exports to a graph whose
output changes from run to run, or to a graph with no latent input at all. A
generator whose samples depend on the other samples in the batch (BatchNorm in
training mode, norms without running statistics, minibatch statistics) gives
different images for the same z at different batch sizes. Both are rejected
here, with the reason, before any file is written.
"""

from __future__ import annotations

import torch
from torch import nn

from distgan.errors import ExportError

PREFLIGHT_BATCH = 8  # samples compared between one batch and one-by-one runs
PREFLIGHT_SEED = 4321  # seed of the latents and labels used by these checks
# Accepted |sample alone - same sample in a batch| per unit of output magnitude. Batched and single-sample
# kernels round differently (about 1e-7 in float32); mixing samples through batch statistics moves outputs
# by orders of magnitude more.
INDEPENDENCE_RTOL = 1e-4


def call_generator(generator: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Call G(z) or, for a conditional generator, G(z, labels)."""
    return generator(z) if labels is None else generator(z, labels)


def _example_inputs(z_dim: int, classes: int, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    rng = torch.Generator().manual_seed(PREFLIGHT_SEED)
    z = torch.randn(batch_size, z_dim, generator=rng)
    labels = torch.randint(0, classes, (batch_size,), generator=rng) if classes else None
    return z, labels


def batch_dependent_modules(generator: nn.Module) -> list[str]:
    """Name the submodules that normalize with statistics of the current batch in eval mode.

    These are batch norms without running statistics and modules that stay in
    training mode after generator.eval() (a train() override, for example).
    """
    found = []
    for name, module in generator.named_modules():
        label = name or type(module).__name__
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not module.track_running_stats:
                found.append(f"{label} ({type(module).__name__} with track_running_stats=False)")
            elif module.training:
                found.append(f"{label} ({type(module).__name__} in training mode)")
        elif isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout)) and module.training:
            found.append(f"{label} ({type(module).__name__} in training mode)")
    return found


def check_generator(generator: nn.Module, z_dim: int, classes: int, sample_shape: list[int]) -> None:
    """Reject a generator (in eval mode) whose output is not a function of each sample's own inputs.

    Runs PREFLIGHT_BATCH random latents (and labels in [0, classes) when
    classes > 0) twice as one batch and once one by one. Raises ExportError
    when the call fails or the output is not a float tensor of shape
    [batch, *sample_shape]. It also raises when two runs on the same inputs
    differ, because then the generator draws its own noise. Last, it raises
    when a sample of the batch differs from the same inputs run alone by more
    than INDEPENDENCE_RTOL times the largest output magnitude (at least 1).
    """
    z, labels = _example_inputs(z_dim, classes, PREFLIGHT_BATCH)
    call = "G(z, labels) with labels int64 [batch]" if classes else "G(z)"
    try:
        with torch.no_grad():
            first = call_generator(generator, z, labels)
            second = call_generator(generator, z, labels)
    except Exception as error:  # a user's module can raise anything; report it with the call that failed
        raise ExportError(f"calling the generator as {call} with z float32 {list(z.shape)} failed: "
                          f"{type(error).__name__}: {error}") from None
    if not isinstance(first, torch.Tensor) or not first.is_floating_point():
        kind = first.dtype if isinstance(first, torch.Tensor) else type(first).__name__
        raise ExportError(f"the generator must return one float tensor, got {kind}")
    expected = [PREFLIGHT_BATCH, *sample_shape]
    if list(first.shape) != expected:
        raise ExportError(f"the generator returned shape {list(first.shape)} for z of shape {list(z.shape)}; "
                          f"its record expects {expected} (sample_shape {sample_shape})")

    if not torch.equal(first, second):
        difference = float((first - second).abs().max())
        raise ExportError(
            f"the generator returned different outputs for the same z (max difference {difference:.3g}): its "
            "forward() draws its own noise (torch.randn, dropout or another random op). The exported graph must "
            "be a function of its inputs: take all randomness from z."
        )

    with torch.no_grad():
        alone = torch.cat([call_generator(generator, z[i : i + 1], None if labels is None else labels[i : i + 1])
                           for i in range(PREFLIGHT_BATCH)])
    per_sample = (alone - first).abs().flatten(1).amax(dim=1)
    worst = int(per_sample.argmax())
    difference = float(per_sample[worst])
    tolerance = INDEPENDENCE_RTOL * max(1.0, float(first.abs().max()))
    if not difference <= tolerance:  # also true for NaN
        suspects = batch_dependent_modules(generator)
        cause = (f"modules that normalize over the batch: {', '.join(suspects)}" if suspects else
                 "forward() mixes samples, for example with a mean or standard deviation over the batch axis")
        raise ExportError(
            f"sample {worst} of a batch of {PREFLIGHT_BATCH} differs from the same z run alone by {difference:.3g} "
            f"(tolerance {tolerance:.3g}): the output depends on the other samples in the batch. Cause: {cause}. Use "
            "running statistics (BatchNorm with track_running_stats=True in eval mode) or a per-sample norm "
            "(InstanceNorm, LayerNorm, GroupNorm)."
        )


def example_inputs(z_dim: int, classes: int, batch_size: int) -> tuple[torch.Tensor, ...]:
    """Return the example inputs that the exporters trace: (z,) or (z, labels) of `batch_size` rows."""
    z, labels = _example_inputs(z_dim, classes, batch_size)
    return (z,) if labels is None else (z, labels)

