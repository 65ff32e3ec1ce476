"""Process-group setup from the launcher's environment (torchrun or ``accelerate launch``), and DDP.

FSDP2 (``--shard``) and sharded checkpoints live in :mod:`multidiff.train.sharded`.

torchrun and accelerate both export ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; :func:`setup_distributed` reads them. Without them (``WORLD_SIZE`` unset or 1) no process
group is created and every collective helper here is a no-op, so a recipe runs unchanged on one device.
The backend is NCCL on CUDA and gloo on the CPU. No home-made process management (DESIGN.md, "Scale").
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

__all__ = [
    "DistInfo",
    "parse_device",
    "setup_distributed",
    "cleanup_distributed",
    "wrap_ddp",
    "unwrap",
    "no_sync",
    "all_reduce_mean",
    "all_gather_objects",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job.

    Attributes:
        rank: Global rank (0 … world_size - 1).
        local_rank: Rank on this host (selects the GPU).
        world_size: Number of processes.
        device: The device this process trains on.
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"DistInfo needs 0 <= rank < world_size, got rank={self.rank}, world={self.world_size}"
            )
        if self.local_rank < 0:
            raise ValueError(f"DistInfo.local_rank must be >= 0, got {self.local_rank}")

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is in use (world_size > 1)."""
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def parse_device(device: str | torch.device | None, option: str = "--device") -> torch.device:
    """``device`` as a torch device, CUDA when available if None; a ValueError naming ``option`` for a name
    torch does not know, a kind other than cpu and cuda, or CUDA where torch sees none."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{option} must be cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{option} must be cpu, cuda or cuda:N, got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {device}: torch sees no CUDA device here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"{option} {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def setup_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group described by the launcher's environment variables, if any.

    Args:
        device: ``"cpu"`` forces CPU training (gloo); ``"cuda"`` requires a GPU; None picks CUDA when
            available. With several processes on CUDA each takes GPU ``LOCAL_RANK``.

    Returns:
        The :class:`DistInfo` of this process.

    Raises:
        ValueError: On inconsistent environment variables or an unavailable device.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", rank if world > 1 else 0)
    if world < 1 or not 0 <= rank < world or local < 0:  # before joining a group that would never form
        raise ValueError(
            f"RANK={rank}, LOCAL_RANK={local} and WORLD_SIZE={world} do not fit (need 0 <= RANK < WORLD_SIZE); "
            "launch with torchrun or accelerate launch"
        )
    kind = parse_device(device).type
    if kind == "cuda":
        asked = torch.device(device).index if device is not None else None
        dev = torch.device("cuda", local if world > 1 else (asked or 0))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if world > 1 and not tdist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ValueError(
                    f"WORLD_SIZE={world} but {name} is not set; launch with torchrun or accelerate launch"
                )
        backend = "nccl" if kind == "cuda" else "gloo"
        tdist.init_process_group(
            backend=backend, rank=rank, world_size=world, device_id=dev if kind == "cuda" else None
        )
    return DistInfo(rank=rank, local_rank=local, world_size=world, device=dev)


def cleanup_distributed() -> None:
    """Leave the process group (no-op without one)."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()


def wrap_ddp(model: nn.Module, dist: DistInfo, **kwargs: Any) -> nn.Module:
    """Wrap ``model`` in DistributedDataParallel when running on several processes, else return it.

    DDP broadcasts rank 0's parameters at construction, so every rank starts from the same weights.
    """
    if not dist.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [dist.device.index] if dist.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or ``torch.compile``) wrapper."""
    while True:
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


@contextmanager
def no_sync(model: nn.Module, skip: bool) -> Iterator[None]:
    """Skip the gradient all-reduce (DDP) or reduce-scatter (FSDP2) inside the block when ``skip`` (gradient
    accumulation: only the last micro-batch communicates)."""
    if skip and hasattr(model, "set_requires_gradient_sync"):  # an FSDP2 module (fully_shard)
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
        return
    ctx = model.no_sync() if skip and hasattr(model, "no_sync") else nullcontext()
    with ctx:
        yield


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of ``value`` over all ranks (a copy; the input is unchanged). Identity on one process."""
    out = value.detach().clone()
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.all_reduce(out, op=tdist.ReduceOp.SUM)
        out /= tdist.get_world_size()
    return out


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` (``[obj]`` on one process). In memory only, never on disk."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        out: list[Any] = [None] * tdist.get_world_size()
        tdist.all_gather_object(out, obj)
        return out
    return [obj]


def barrier() -> None:
    """Wait for every rank (no-op on one process)."""
    if tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1:
        tdist.barrier()
