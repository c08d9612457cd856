"""Checks on how the processes of a run were launched."""

from __future__ import annotations

import datetime
import os

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast

from distgan.errors import CheckpointError, ConfigError

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


def init_restart_safe_process_group(cpu: bool, timeout: datetime.timedelta) -> bool:
    """Create the default process group under torchelastic in a store namespace of its own restart attempt.

    torchelastic's static rendezvous (the default of `accelerate launch`) keeps
    one TCPStore for every attempt of a job, and workers that use the agent's
    store read and write its keys without an attempt prefix (torch 2.13,
    torch/distributed/rendezvous.py). After `--max_restarts` restarts the
    workers, a new worker can read the address that a killed worker of the
    previous attempt left there, and gloo fails with "Connection refused". On
    the 2-core test machine that happened in 4 of 5 restarts. Returns True
    when it created the group; otherwise Accelerate creates it as usual.
    """
    if torch.distributed.is_initialized() or os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return False
    if cpu:
        backend = "gloo"
    elif torch.cuda.is_available():
        # NOTE: only the gloo branch has run (in the test suite); this one has not run on a GPU yet.
        backend = "nccl"  # the backend Accelerate picks for CUDA
    else:
        return False
    world_size = int(os.environ["WORLD_SIZE"])
    store = torch.distributed.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                       is_master=False, timeout=timeout)
    # NOTE: each agent counts its own restarts. On one node that count is the same for every worker; across
    # nodes it matches only while every node restarts its workers once per failure.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    torch.distributed.init_process_group(backend, store=torch.distributed.PrefixStore(f"distgan/attempt_{attempt}", store),
                                         rank=int(os.environ["RANK"]), world_size=world_size, timeout=timeout)
    return True


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


def broadcast_status(accelerator: Accelerator, status: int) -> int:
    """Return the main process's `status` on every rank. Every rank must call it, and it waits for all of them.

    A failure that only the main process detects (a checkpoint it could not
    write, for example) reaches the other ranks this way, so they stop with it
    instead of waiting in the next collective.
    """
    if accelerator.num_processes == 1:
        return status
    tensor = torch.tensor([status], dtype=torch.int64, device=accelerator.device)
    return int(broadcast(tensor, from_process=0).item())


def check_resume_step(accelerator: Accelerator, step: int) -> None:
    """Raise CheckpointError on every rank when the ranks resumed from different steps.

    That happens when the run directory is not one shared directory on every
    node, or when a checkpoint changed while the ranks were choosing one.
    """
    if accelerator.num_processes == 1:
        return
    steps = accelerator.gather(torch.tensor([step], dtype=torch.int64, device=accelerator.device)).tolist()
    if len(set(steps)) > 1:
        listing = ", ".join(f"rank {rank}: step {value}" for rank, value in enumerate(steps))
        raise CheckpointError(f"the processes resumed from different checkpoints ({listing}); every node must see the "
                              "same run directory, on a shared file system. Fix that and start the run again.")


def is_collective_failure(error: BaseException) -> bool:
    """Return whether `error` comes from a collective that failed because a peer or the network was lost.

    NCCL and the c10d store raise torch.distributed.DistError subclasses.
    gloo raises a plain RuntimeError whose message names its source file
    under gloo/ (torch 2.13), such as "Connection reset by peer" or "Timed out
    waiting 5000ms for recv operation to complete".
    """
    if isinstance(error, torch.distributed.DistError):
        return True
    return isinstance(error, RuntimeError) and "gloo/" in str(error)
