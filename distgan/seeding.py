"""Randomness as a pure function of (seed, stream, step).

Every random draw of a training step (the real batch, the latents, model
initialization) comes from a generator seeded by `derive_seed(seed, stream,
step)`. The draw covers the global batch and each rank takes its slice, so a
run gives the same samples on any number of processes, and resuming at step k
needs no saved RNG state to continue exactly.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: int | str) -> int:
    """Return a 63-bit seed determined only by `seed` and `keys` (stream names, step numbers)."""
    digest = hashlib.blake2b(repr((seed, *keys)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def make_generator(seed: int, *keys: int | str, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a torch.Generator on `device` seeded with derive_seed(seed, *keys)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(derive_seed(seed, *keys))
    return generator


def local_rows(step_batch: int, micro_batches: int, rank: int, world_size: int) -> torch.Tensor:
    """Return the rows of a step's global batch that `rank` trains on, micro-batch after micro-batch.

    The step's `step_batch` rows form `micro_batches` consecutive micro-batches,
    and each micro-batch is split evenly over the ranks. So a step with N
    micro-batches of B samples trains on the same samples as a step with one
    batch of N * B samples.
    """
    micro = step_batch // micro_batches
    local = micro // world_size
    starts = torch.arange(micro_batches) * micro + rank * local
    return (starts[:, None] + torch.arange(local)[None, :]).flatten()


def global_latents(
    seed: int, stream: str, step: int, global_batch: int, z_dim: int, device: torch.device
) -> torch.Tensor:
    """Draw standard normal latents [global_batch, z_dim] for one step of one stream."""
    generator = make_generator(seed, stream, step, device=device)
    return torch.randn(global_batch, z_dim, generator=generator, device=device)


def seed_device_rng(seed: int, device: torch.device) -> None:
    """Seed the default generators that work on `device` draws from: the CPU's and that device's.

    torch.manual_seed() seeds every backend torch knows (CUDA, MPS, XPU, ...)
    and formats a stack trace for each one not initialized yet. With torch
    2.13 on a 2-core CPU machine that took 118 us per call, against 1 us for
    the CPU generator alone, which is too much for every training step.
    """
    torch.default_generator.manual_seed(seed)
    if device.type != "cpu":
        # On an initialized device this seeds its current generator at once, without the stack trace.
        torch.get_device_module(device).manual_seed(seed)
