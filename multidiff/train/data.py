"""A deterministic data stream: per-epoch permutations, sharding across ranks, per-sample seeds.

The training data is one endless stream of positions ``p = 0, 1, 2, …``; position p is item
``perm_e[i]`` of epoch ``e = p // N`` at ``i = p % N``, where ``perm_e`` is a permutation drawn from
``(seed, e)``. Optimiser step s consumes positions ``[s·G, (s+1)·G)`` for the global batch G, cut into
micro-batches and ranks in a fixed layout, so

* the data position is a pure function of the step (a resumed run sees exactly the same samples);
* every sample carries its own seed, derived from ``(seed, e, i)``, from which the training noise, σ and
  label dropout are drawn; the loss then does not depend on how the global batch is split across ranks
  or accumulation steps (house rule 7, "randomness is an argument").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "DataPosition",
    "StreamLayout",
    "derive_seed",
    "epoch_permutation",
    "StreamSampler",
    "StreamDataset",
    "stream_loader",
]

SEED_KEY = "sample_seed"
"""Key under which :class:`StreamDataset` puts each item's seed."""


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy ``SeedSequence`` hashing: well mixed, stable)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def epoch_permutation(num_items: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order of items in ``epoch``: a permutation drawn from ``(seed, epoch)`` (identity without shuffle)."""
    if not shuffle:
        return np.arange(num_items)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(num_items)


@dataclass(frozen=True)
class DataPosition:
    """Where the stream stands: the next item is number ``index`` (0-based) of ``epoch``."""

    epoch: int
    index: int

    def to_dict(self) -> dict[str, int]:
        """JSON form."""
        return {"epoch": self.epoch, "index": self.index}


@dataclass(frozen=True)
class StreamLayout:
    """How one optimiser step's global batch is cut: ``global_batch = micro_batch · accum · world_size``.

    Micro-batch m of rank r holds the global-batch slots ``[(m·W + r)·b, (m·W + r + 1)·b)``.

    Attributes:
        num_items: Items per epoch N.
        micro_batch: Samples per micro-batch on one rank, b.
        accum: Micro-batches per optimiser step (gradient accumulation).
        world_size: Number of ranks W.
        seed: Seed of the permutations and per-sample seeds.
        shuffle: Shuffle each epoch.
    """

    num_items: int
    micro_batch: int
    accum: int = 1
    world_size: int = 1
    seed: int = 0
    shuffle: bool = True

    def __post_init__(self) -> None:
        for name in ("num_items", "micro_batch", "accum", "world_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"StreamLayout.{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"StreamLayout.seed must be >= 0, got {self.seed}")

    @property
    def global_batch(self) -> int:
        """Samples per optimiser step over all ranks."""
        return self.micro_batch * self.accum * self.world_size

    def position(self, step: int) -> DataPosition:
        """The stream position before step ``step``."""
        p = step * self.global_batch
        return DataPosition(p // self.num_items, p % self.num_items)

    def step_of(self, position: DataPosition) -> int:
        """The step whose batch starts at ``position`` (inverse of :meth:`position`).

        Raises:
            ValueError: If the position is not at a step boundary of this layout.
        """
        p = position.epoch * self.num_items + position.index
        if p % self.global_batch:
            raise ValueError(
                f"data position {position} is not a step boundary for a global batch of {self.global_batch}"
            )
        return p // self.global_batch

    def micro_batch_slots(self, step: int, micro: int, rank: int) -> list[tuple[int, int, int]]:
        """``(epoch, index in epoch, dataset index)`` for every sample of one rank's micro-batch."""
        b, W = self.micro_batch, self.world_size
        start = step * self.global_batch + (micro * W + rank) * b
        out = []
        perm_epoch, perm = -1, None
        for p in range(start, start + b):
            e, i = divmod(p, self.num_items)
            if e != perm_epoch:
                perm_epoch, perm = e, epoch_permutation(self.num_items, self.seed, e, self.shuffle)
            out.append((e, i, int(perm[i])))  # type: ignore[index]
        return out


class StreamSampler(Sampler[list[tuple[int, int, int]]]):
    """Batch sampler yielding one rank's micro-batches from ``start_step`` on (``accum`` per step).

    Args:
        layout: The stream layout.
        rank: This process's rank.
        start_step: First optimiser step to produce data for.
        num_steps: Steps to produce (None: endless).
    """

    def __init__(
        self, layout: StreamLayout, rank: int = 0, start_step: int = 0, num_steps: int | None = None
    ) -> None:
        if not 0 <= rank < layout.world_size:
            raise ValueError(f"rank {rank} outside 0..{layout.world_size - 1}")
        self.layout, self.rank, self.start_step, self.num_steps = layout, rank, start_step, num_steps

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        step = self.start_step
        while self.num_steps is None or step < self.start_step + self.num_steps:
            for micro in range(self.layout.accum):
                yield self.layout.micro_batch_slots(step, micro, self.rank)
            step += 1

    def __len__(self) -> int:
        if self.num_steps is None:
            raise TypeError("an endless StreamSampler has no length")
        return self.num_steps * self.layout.accum


class StreamDataset(Dataset):
    """Wraps a map-style dataset so an item is fetched by ``(epoch, index in epoch, dataset index)``.

    The item is ``dataset.get(dataset_index, epoch)`` when the dataset has such a method (e.g.
    :class:`multidiff.data.audio.AudioFolder`, whose crops depend on the epoch), else
    ``dataset[dataset_index]``; a non-dict item becomes ``{"data": item}``. The item gains
    ``sample_seed``, derived from ``(seed, epoch, index in epoch)``.
    """

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int, int]) -> dict[str, Any]:
        epoch, i, index = key
        get = getattr(self.dataset, "get", None)
        item = get(index, epoch) if callable(get) else self.dataset[index]
        item = dict(item) if isinstance(item, Mapping) else {"data": item}
        item[SEED_KEY] = torch.tensor(derive_seed(self.seed, epoch, i), dtype=torch.int64)
        return item


def stream_loader(
    dataset: Any,
    layout: StreamLayout,
    *,
    rank: int = 0,
    start_step: int = 0,
    num_steps: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    collate_fn: Any = None,
) -> DataLoader:
    """A DataLoader over :class:`StreamDataset` driven by :class:`StreamSampler` (one rank's micro-batches).

    Every batch is a dict with ``sample_seed`` [b] (int64) beside the dataset's own keys.
    """
    if len(dataset) != layout.num_items:
        raise ValueError(f"the dataset has {len(dataset)} items but the layout says {layout.num_items}")
    return DataLoader(
        StreamDataset(dataset, layout.seed),
        batch_sampler=StreamSampler(layout, rank, start_step, num_steps),
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        persistent_workers=num_workers > 0,
        # The loader draws its workers' base seed from this generator, not from the global RNG, so
        # creating it (again, on resume) does not shift the global random stream.
        generator=torch.Generator().manual_seed(derive_seed(layout.seed, start_step)),
    )
