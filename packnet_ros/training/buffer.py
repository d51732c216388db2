"""Bounded replay buffer of triplets: new scenes in, random batches out, old scenes kept."""
from __future__ import annotations

import random
from collections import deque

from packnet_ros.data.stream import Triplet


class ReplayBuffer:
    """Holds at most max_triplets and max_bytes; evicts the oldest first."""

    def __init__(self, max_triplets: int, max_bytes: int, seed: int | None = None):
        self.max_triplets = max_triplets
        self.max_bytes = max_bytes
        self.items: deque[Triplet] = deque()
        self.nbytes = 0
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, triplet: Triplet) -> None:
        if triplet.nbytes > self.max_bytes:
            raise ValueError(f'one triplet ({triplet.nbytes} B) exceeds the buffer limit ({self.max_bytes} B)')
        self.items.append(triplet)
        self.nbytes += triplet.nbytes
        while len(self.items) > self.max_triplets or self.nbytes > self.max_bytes:
            self.nbytes -= self.items.popleft().nbytes

    def sample(self, batch_size: int) -> list[Triplet]:
        """Uniform sample without replacement (the whole buffer if it is smaller)."""
        return self.rng.sample(list(self.items), min(batch_size, len(self.items)))
