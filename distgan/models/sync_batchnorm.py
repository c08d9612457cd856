"""BatchNorm with statistics over the global batch of all ranks, on any device.

torch.nn.SyncBatchNorm (torch 2.13) accepts only GPU inputs, so CPU runs
under gloo need their own version. GlobalBatchNorm all-reduces the per-channel
sums and sums of squares with a differentiable all-reduce. That gives the same
normalization as one BatchNorm over the concatenated global batch. One process
uses the same formula, so runs on 1 and N processes agree.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import nn


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A drop-in replacement of BatchNorm1d/2d whose training statistics span all ranks."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        channels = x.size(1)
        dims = [0, *range(2, x.dim())]
        count = torch.tensor([x.numel() // channels], dtype=torch.float32, device=x.device)
        x_float = x.float()
        moments = torch.cat([x_float.sum(dims), x_float.square().sum(dims), count])
        if _world_size() > 1:
            moments = dist_fn.all_reduce(moments)
        total = moments[-1]
        mean = moments[:channels] / total
        variance = (moments[channels : 2 * channels] / total - mean.square()).clamp_min(0.0)

        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = variance * total / (total - 1.0).clamp_min(1.0)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)

        shape = [1, channels] + [1] * (x.dim() - 2)
        scale = torch.rsqrt(variance + self.eps)
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        return (x_float * scale.view(shape) + shift.view(shape)).to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d/2d/3d in `module` by a GlobalBatchNorm with the same weights and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        converted = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                    module.track_running_stats)
        converted.load_state_dict(module.state_dict())
        converted.train(module.training)
        return converted
    for name, child in module.named_children():
        setattr(module, name, convert_batchnorm(child))
    return module
