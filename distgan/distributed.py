"""Checks on how the processes of a run were launched."""

from __future__ import annotations

import os

import torch
from accelerate import Accelerator

from distgan.errors import ConfigError

RANK_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
CPU_LAUNCH_HINT = "accelerate launch --multi_gpu --num_processes N -m distgan train --cpu ..."


def check_launch() -> None:
    """Raise ConfigError when `accelerate launch --cpu --num_processes N` started only one process.

    Without MPI, Accelerate's CPU launcher (accelerate 1.x) starts a single
    process for any N and sets MASTER_ADDR but no rank variables. That process
    would train alone while the user expects N of them, so it stops here.
    """
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if use_cpu and "MASTER_ADDR" in os.environ and not any(name in os.environ for name in RANK_VARIABLES):
        raise ConfigError(
            "accelerate launch --cpu started a single process: without an MPI hostfile, Accelerate's CPU launcher "
            "runs one process whatever --num_processes says. Start CPU processes with the multi-process launcher: "
            f"{CPU_LAUNCH_HINT} (or accelerate launch --config_file launch/cpu.yaml -m distgan train). "
            "For one process, run distgan train directly, or unset MASTER_ADDR."
        )


def use_cpu(requested: bool) -> bool:
    """Return whether training runs on the CPU: when requested, or when torch finds no accelerator.

    Accelerate treats a process group on a machine without GPUs as distributed
    only with cpu=True, so a CPU-only machine always passes it.
    """
    return requested or not torch.accelerator.is_available()


def shard_range(size: int, rank: int, world_size: int) -> range:
    """Return the indices of a data set of `size` samples that `rank` evaluates.

    The shards are contiguous, differ in length by at most one and together
    cover every index exactly once, so no sample is padded in or counted twice.
    """
    base, extra = divmod(size, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_shards(local: torch.Tensor, accelerator: Accelerator) -> torch.Tensor:
    """Concatenate the rows that every rank computed for its shard_range(), in rank order, without padding.

    Ranks may have different numbers of rows. Each pads to the largest for the
    all-gather, and the gathered lengths tell where the padding is cut off.
    """
    if accelerator.num_processes == 1:
        return local
    length = torch.tensor([len(local)], device=local.device)
    lengths = accelerator.gather(length).tolist()
    padded = accelerator.pad_across_processes(local, dim=0)
    gathered = accelerator.gather(padded)
    longest = max(lengths)
    return torch.cat([gathered[rank * longest : rank * longest + count] for rank, count in enumerate(lengths)])
