"""FSDP for G, D and G_ema: torch's fully_shard (FSDP2), applied by distgan.

With sharding on, each process stores only its shard of every parameter,
gradient and Adam state, and a layer's full weights exist only while that
layer runs. G and D stay two separate sharded models, so the D phase
reduce-scatters only D's gradients and the G phase only G's (D's
parameters are frozen there, and FSDP skips frozen parameters).

distgan applies fully_shard itself instead of through Accelerate's FSDP
plugin. Accelerate 1.16 enables its plugin only on GPUs, so code built on it
could not be tested on CPU processes. The plugin also prepares one model
with one optimizer, while a GAN has two of each plus the EMA copy of G,
which is sharded like G so that its update stays local to each process.

NOTE: the tests run this module on CPU processes (gloo) only; on GPUs
(NCCL) it has not been run.

Checkpoints hold full, unsharded tensors gathered to the main process:
model weights in safetensors as for DDP runs, and optimizer state keyed by
parameter name (torch.distributed.checkpoint's full state dict).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from accelerate.utils import parse_flag_from_env
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from distgan.config import TrainConfig
from distgan.errors import ConfigError

# A module whose own parameters hold at least this many values becomes a sharding unit of its own, so its
# weights are gathered only while it runs. Smaller ones (biases, norms) go with the nearest unit above them.
UNIT_MIN_VALUES = 1 << 16

# fully_shard warns when a module returns a view, because an in-place operation on it would skip FSDP's
# backward hook. The built-in models return views (unflatten, squeeze), and the training step applies
# only out-of-place operations to the outputs of G and D.
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(.*\) returned a view tensor")

GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)
# The main process's full state is broadcast, and each process keeps its shard of it.
SCATTER = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=True)


def check_sharding(config: TrainConfig, world_size: int) -> None:
    """Raise ConfigError for a run of one process and for options that distgan does not combine with FSDP."""
    if parse_flag_from_env("FSDP_OFFLOAD_PARAMS"):
        raise ConfigError("the Accelerate config sets fsdp_offload_params: true, but distgan keeps the shards on "
                          "the training device; set it to false")
    if config.mixed_precision == "fp16":
        raise ConfigError("--fsdp (or an Accelerate FSDP config) does not support --mixed-precision fp16, because "
                          "sharded gradients need a sharded GradScaler, which distgan does not set up; use bf16")
    if config.compile:
        raise ConfigError("--fsdp and --compile together are not supported; drop one of them")
    if config.spectral_norm:
        raise ConfigError("--fsdp and --spectral-norm together are not supported, because fully_shard does not "
                          "shard the parametrized weights of spectral normalization; drop one of them")
    if world_size < 2:
        raise ConfigError("--fsdp shards the models over the processes of a run, and this run has one process; "
                          "start it with accelerate launch and several processes (see launch/fsdp.yaml), or drop "
                          "--fsdp")


def shard(module: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """Apply fully_shard to the large layers of `module`, then to `module` itself, in place; return it.

    Call it after the weights are initialized and before the optimizer is
    created, because fully_shard replaces each parameter with a sharded one.
    """
    mesh = init_device_mesh(device.type, (world_size,))
    for child in list(module.modules())[1:]:
        own = sum(parameter.numel() for parameter in child.parameters(recurse=False))
        if own >= UNIT_MIN_VALUES:
            fully_shard(child, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def reshard_all(module: nn.Module) -> None:
    """Free the gathered weights of every sharding unit in `module` (FSDPModule.reshard() covers one unit)."""
    for unit in module.modules():
        if isinstance(unit, FSDPModule):
            unit.reshard()


def local(tensor: torch.Tensor) -> torch.Tensor:
    """Return this process's shard of a sharded tensor, or the tensor itself."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def is_sharded(module: nn.Module) -> bool:
    """Return whether fully_shard was applied to `module`."""
    return isinstance(module, FSDPModule)


def gather_model(module: nn.Module) -> dict[str, torch.Tensor]:
    """Return the full state dict of a sharded module on the main process ({} elsewhere). Every process calls it."""
    return get_model_state_dict(module, options=GATHER)


def gather_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Return the full optimizer state, keyed by parameter name, on the main process ({} elsewhere).

    Every process calls it.
    """
    return get_optimizer_state_dict(module, optimizer, options=GATHER)


def load_model(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full state dict into a sharded module; each process keeps its shard."""
    set_model_state_dict(module, state, options=SCATTER)


def load_optimizer(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a full optimizer state written by gather_optimizer(); each process keeps its shard."""
    set_optimizer_state_dict(module, optimizer, state, options=SCATTER)
