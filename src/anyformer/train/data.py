"""The training data order: a seeded permutation per epoch and a cursor into it. Its whole
state is (epoch, position), so a resumed run draws exactly the batches it would have."""
from __future__ import annotations

import torch


class DataCursor:
    def __init__(self, size: int, seed: int, epoch: int = 0, position: int = 0) -> None:
        self.size, self.seed, self.epoch, self.position = size, seed, epoch, position
        self._perm = self._permutation(epoch)

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=gen)

    def take(self, count: int) -> torch.Tensor:
        """The next `count` indices, continuing into the next epoch's order when one ends."""
        parts = []
        while count > 0:
            if self.position >= self.size:
                self.epoch, self.position = self.epoch + 1, 0
                self._perm = self._permutation(self.epoch)
            n = min(count, self.size - self.position)
            parts.append(self._perm[self.position: self.position + n])
            self.position += n
            count -= n
        return torch.cat(parts)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}


def micro_batch_parts(indices: torch.Tensor, grad_accum: int, world: int, rank: int) -> list[torch.Tensor]:
    """This process's share of each micro-batch of the global batch `indices`. tensor_split
    (not chunk) keeps the micro-batches within one example of each other in size, so with
    batch_size >= grad_accum x world every process gets at least one example in each."""
    return [micro.tensor_split(world)[rank] for micro in indices.tensor_split(grad_accum)]
