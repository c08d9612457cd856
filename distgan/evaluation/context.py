"""Where an evaluation runs: one process, or several under `accelerate launch` that share the feature passes.

Under `accelerate launch`, each process computes the rows of
distgan.distributed.shard_range and gather_shards concatenates them in rank
order, so every sample is visited exactly once and every process ends with
the same full arrays.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


class EvalContext:
    """Rank, world size and gathering of row shards, with no process group for a single process."""

    def __init__(self, cpu: bool = False) -> None:
        self.accelerator: Any = None
        self.rank, self.world_size = 0, 1
        self.device = "cpu"
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator

            from distgan.distributed import check_launch, use_cpu

            check_launch()
            self.accelerator = Accelerator(cpu=use_cpu(cpu))
            self.rank, self.world_size = self.accelerator.process_index, self.accelerator.num_processes
            self.device = str(self.accelerator.device)

    @property
    def is_main_process(self) -> bool:
        return self.rank == 0

    def shard(self, size: int) -> range:
        """Return the rows of `size` that this process computes."""
        from distgan.distributed import shard_range

        return shard_range(size, self.rank, self.world_size)

    def gather(self, local: np.ndarray) -> np.ndarray:
        """Concatenate every process's rows of an array, in rank order (a no-op for one process)."""
        if self.accelerator is None:
            return local
        import torch

        from distgan.distributed import gather_shards

        tensor = torch.from_numpy(np.ascontiguousarray(local)).to(self.accelerator.device)
        return gather_shards(tensor, self.accelerator).cpu().numpy()

    def close(self) -> None:
        if self.accelerator is not None:
            self.accelerator.end_training()
