"""Which samples of a finite data set form the global batch of each step.

Epoch e visits the data in the order of a permutation seeded by (seed, e);
step s takes the global batch at positions [s * B, (s + 1) * B) of the
concatenated epochs. The indices therefore depend only on (seed, step), never
on the number of processes or on where a run was resumed.
"""

from __future__ import annotations

import torch

from distgan.seeding import make_generator


class IndexSchedule:
    """Global batch indices of a data set of `size` samples for each step."""

    def __init__(self, size: int, global_batch: int, seed: int) -> None:
        if size < 1:
            raise ValueError("an index schedule needs at least one sample")
        self.size = size
        self.global_batch = global_batch
        self.seed = seed
        self._permutations: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._permutations:
            # Steps move forward, so only the newest two epochs are ever needed again.
            for old in [e for e in self._permutations if e < epoch - 1]:
                del self._permutations[old]
            generator = make_generator(self.seed, "epoch", epoch)
            self._permutations[epoch] = torch.randperm(self.size, generator=generator)
        return self._permutations[epoch]

    def global_indices(self, step: int) -> torch.Tensor:
        """Return the int64 indices [global_batch] of the samples of `step`."""
        start = step * self.global_batch
        stop = start + self.global_batch
        parts = []
        position = start
        while position < stop:
            epoch, offset = divmod(position, self.size)
            take = min(self.size - offset, stop - position)
            parts.append(self._permutation(epoch)[offset : offset + take])
            position += take
        return torch.cat(parts)

    def local_indices(self, step: int, rows: torch.Tensor) -> torch.Tensor:
        """Return the entries `rows` (a rank's rows, see seeding.local_rows) of global_indices(step)."""
        return self.global_indices(step)[rows]
