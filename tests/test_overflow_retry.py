"""The fp16 overflow handling of a step, driven on the CPU by a real torch GradScaler.

Accelerate creates a GradScaler only for fp16 on GPUs, so these tests give a
CPU Accelerator one before prepare(), which makes Accelerate route backward
and both optimizer steps through it exactly as on a GPU. A loss scale near
float32's maximum makes the first attempts of a phase overflow.
"""

from __future__ import annotations

import torch

from distgan.losses import get_loss
from distgan.models import build_discriminator, build_generator, default_architecture
from distgan.step import (D_COUNT, GOOD_COUNT, MAX_OVERFLOW_RETRIES, SKIPPED, AdversarialStep, MicroBatch,
                          Penalties)

# A power of 2, so that scaling and unscaling are exact. With the batch below, the backward pass of D's loss
# overflows float32 at scales of 2**104 and more (measured), and D's phase goes through at 2**100.
HUGE_SCALE = 2.0**105


def make_runner(scale: float | None) -> tuple[AdversarialStep, torch.nn.Module, torch.nn.Module]:
    """Return a step runner on fresh models with seed 0; with a GradScaler of `scale` unless it is None."""
    from accelerate import Accelerator

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    if scale is not None:
        accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=scale, growth_interval=1000)
    # Three hidden layers: with the batch() below, D's backward pass overflows float32 at HUGE_SCALE.
    record = default_architecture("dense", "points", [2], 4, 16, depth=3)
    G, D = build_generator(record), build_discriminator(record)
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    G, D, opt_G, opt_D = accelerator.prepare(G, D, opt_G, opt_D)
    runner = AdversarialStep(accelerator, G, D, opt_G, opt_D, get_loss("logistic"), Penalties())
    return runner, G, D


def batch() -> MicroBatch:
    generator = torch.Generator().manual_seed(1)
    # Real points far out make the gradients of D's backward pass large.
    return MicroBatch(real=1000 * torch.randn(8, 2, generator=generator), labels=torch.zeros(8, dtype=torch.long),
                      z_D=torch.randn(8, 4, generator=generator), z_G=torch.randn(8, 4, generator=generator))


def test_overflow_retry_matches_unscaled_step():
    plain, G_plain, D_plain = make_runner(None)
    scaled, G_scaled, D_scaled = make_runner(HUGE_SCALE)
    plain_stats = plain.run(0, [batch()])
    stats = scaled.run(0, [batch()])
    scale = scaled.accelerator.scaler.get_scale()
    # At least one attempt overflowed and halved the scale before a phase went through.
    assert scale < HUGE_SCALE
    # Dividing by a power of 2 is exact, so the repeated phases give the unscaled step's update.
    for plain_parameter, parameter in zip([*G_plain.parameters(), *D_plain.parameters()],
                                          [*G_scaled.parameters(), *D_scaled.parameters()]):
        assert torch.equal(plain_parameter, parameter)
    # The overflowing attempts are not progress: the step counts once, as a good step.
    assert stats[GOOD_COUNT].item() == 1.0
    assert stats[D_COUNT].item() == 1.0
    assert stats[SKIPPED].item() == 0.0
    assert torch.equal(stats, plain_stats)


def test_overflow_every_attempt_skips_step():
    runner, G, D = make_runner(HUGE_SCALE)
    step_batch = batch()
    step_batch.real = step_batch.real * 1e27  # D's gradients overflow at every scale the 16 attempts reach
    before = [parameter.detach().clone() for parameter in [*G.parameters(), *D.parameters()]]
    stats = runner.run(0, [step_batch])
    assert stats[SKIPPED].item() == 1.0
    assert stats[GOOD_COUNT].item() == 0.0
    assert stats[D_COUNT].item() == 0.0
    # The D phase ran MAX_OVERFLOW_RETRIES times, halving the scale each time; G never ran.
    assert runner.accelerator.scaler.get_scale() == HUGE_SCALE / 2**MAX_OVERFLOW_RETRIES
    for previous, parameter in zip(before, [*G.parameters(), *D.parameters()]):
        assert torch.equal(previous, parameter)
