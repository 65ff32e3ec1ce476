"""FSDP2 for models that do not fit one device, and sharded, resumable checkpoints through
``torch.distributed.checkpoint`` (DCP).

* :func:`shard_model`: ``fully_shard`` (FSDP2) on every block of the backbone (each DiT block, each U-Net
  stage), then on the whole trained module; on CUDA with ``--precision bf16`` the blocks compute with bf16
  parameters and reduce gradients in float32 (``MixedPrecisionPolicy``). Optional activation checkpointing
  per block (the composable ``checkpoint``, which keeps parameter names). Parameters, gradients, AdamW state
  and the EMA are then split across ranks.
* :class:`ShardedEMA`: the EMA of a sharded module (each rank averages its own shard); :meth:`ShardedEMA.gather`
  assembles the full weights on rank 0 for previews and the pipeline folder.
* :func:`save_sharded_state` / :func:`restore_sharded_state`: the run folder's checkpoint with model,
  optimiser and EMA written by every rank through DCP into ``ckpt-<step>/dcp/`` (RNG states, data position and
  the pipeline as in :func:`multidiff.train.checkpoint.save_training_state`). Atomic: the shards go to a
  hidden staging folder, which moves into the checkpoint's temporary folder before that is renamed into place;
  ``latest`` is replaced last. DCP reshards on load, so a checkpoint written by N processes resumes on M
  (M = 1 included: the plain module then loads the full tensors).
* :func:`read_sharded_tensors`: full tensors of a sharded checkpoint in one process (no process group), e.g.
  the EMA weights for a single-file pipeline.

With ``--shard`` on one process nothing is split (FSDP2 needs a process group of several ranks); the model
trains as usual and its checkpoints are written in the same DCP layout, so they resume on any number of
processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from torch import Tensor, nn

from multidiff.core.ema import EMA, _check_names, _named_state
from multidiff.train.checkpoint import Checkpoint, gather_rng_states, restore_rank_rng, save_checkpoint
from multidiff.train.distributed import DistInfo, all_gather_objects, barrier, unwrap

__all__ = [
    "DCP_NAME",
    "FORMAT",
    "ShardedEMA",
    "shard_units",
    "apply_activation_checkpointing",
    "shard_model",
    "is_sharded",
    "is_sharded_checkpoint",
    "save_sharded_state",
    "restore_sharded_state",
    "read_sharded_tensors",
]

#: The checkpoint sub-folder that holds the DCP files (``.metadata`` and one ``.distcp`` file per rank).
DCP_NAME = "dcp"
#: ``state.json["format"]`` of a sharded checkpoint.
FORMAT = "dcp"
_STAGING_PREFIX = ".tmp-dcp-"


def _pg_active() -> bool:
    return tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1


@contextlib.contextmanager
def _quiet_single_process() -> Iterator[None]:
    """DCP warns on every save or load without a process group; one process is meant here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a DTensor (split by :func:`shard_model`)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP2 shards (and activation checkpointing recomputes) one by one: every
    :class:`~multidiff.nn.dit.DiTBlock` and every :class:`~multidiff.nn.unet_blocks.UNetLayer`, outermost first
    (a block inside another unit is not listed again)."""
    from multidiff.nn.dit import DiTBlock
    from multidiff.nn.unet_blocks import UNetLayer

    units: list[nn.Module] = []
    inside: set[int] = set()
    for m in model.modules():
        if id(m) in inside or not isinstance(m, (DiTBlock, UNetLayer)):
            continue
        units.append(m)
        inside.update(id(s) for s in m.modules())
    return units


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute the activations of each of :func:`shard_units` in the backward pass instead of storing them
    (composable ``torch.distributed._composable.checkpoint``: parameter names and the module tree are
    unchanged, so checkpoints and the EMA see the same keys). Returns the number of blocks.

    Raises:
        ValueError: If ``model`` has no block to checkpoint.
    """
    from torch.distributed._composable import checkpoint

    units = shard_units(model)
    if not units:
        raise ValueError("--activation-checkpointing: the model has no DiT block or U-Net stage to recompute")
    for unit in units:
        checkpoint(unit)
    return len(units)


def shard_model(
    model: nn.Module,
    dist: DistInfo,
    *,
    precision: str = "bf16",
    activation_checkpointing: bool = False,
) -> nn.Module:
    """FSDP2 on ``model`` in place: ``fully_shard`` on every block, then on the root.

    Call before the optimiser and the EMA are built (``fully_shard`` replaces the parameters by DTensor
    shards). With one process nothing is sharded (only activation checkpointing is applied).

    Args:
        model: The trained module (denoiser, or denoiser with text encoder), on this rank's device.
        dist: The process layout.
        precision: ``"bf16"``: on CUDA the blocks and the root compute with bf16 copies of the parameters
            (gathered in bf16) and reduce gradients in float32; the sharded parameters, their gradients, the
            optimiser state and the EMA stay float32. ``"fp32"``, and always on the CPU: float32 throughout.
        activation_checkpointing: Recompute each block's activations in the backward pass.

    Returns:
        ``model`` (the same object, its class swapped by FSDP2 when sharded).

    Raises:
        ValueError: If the model has no block to shard.
    """
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if not dist.distributed:
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    units = shard_units(model)
    if not units:
        raise ValueError("--shard: the model has no DiT block or U-Net stage to shard")
    if dist.device.type == "cuda" and precision == "bf16":
        blocks = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        # the root keeps its inputs as they come: the denoiser's scalings stay float32 (autocast does the rest)
        root = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    else:
        blocks = root = MixedPrecisionPolicy()
    for unit in units:
        fully_shard(unit, mp_policy=blocks)
    fully_shard(model, mp_policy=root)
    return model


class ShardedEMA(EMA):
    """:class:`~multidiff.core.ema.EMA` of a module sharded by :func:`shard_model`.

    The averages are DTensors split like the parameters, so each rank averages only its shard (the update is
    the inherited one). :meth:`gather` assembles the full averages, on rank 0, for :meth:`copy_to` (the
    pipeline's plain module); every rank must call it, at the same point. Unsharded (one process) it behaves
    as the plain EMA.

    Args:
        model: The (sharded) module.
        decay: The asymptotic decay in [0, 1).
        keep_full: Whether this rank keeps the gathered weights (rank 0).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, *, keep_full: bool = True) -> None:
        super().__init__(model, decay)
        self.keep_full = keep_full
        self.version = 0
        self._full: dict[str, Tensor] | None = None
        self._full_version = -1

    def update(self, model: nn.Module, step: int) -> None:
        """Average this rank's shards (see :meth:`EMA.update`)."""
        super().update(model, step)
        self.version += 1

    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load averages (see :meth:`EMA.load_state_dict`)."""
        super().load_state_dict(state)
        self.version += 1

    def mark_changed(self) -> None:
        """Say that the averages were changed in place (e.g. loaded by DCP), so :meth:`gather` runs again."""
        self.version += 1

    @torch.no_grad()
    def gather(self) -> None:
        """Assemble the full averages on this rank if ``keep_full`` (on CPU); collective: every rank calls it.
        A no-op when nothing changed since the last gather."""
        from torch.distributed.tensor import DTensor

        if self._full_version == self.version or not any(isinstance(t, DTensor) for t in self.params):
            return  # unchanged, or nothing sharded (copy_to then reads the averages themselves)
        full: dict[str, Tensor] = {}
        for name, t in zip(self.param_names + self.buffer_names, self.params + self.buffers):
            whole = t.full_tensor() if isinstance(t, DTensor) else t
            if self.keep_full:
                full[name] = whole.detach().to("cpu", copy=True)
        self._full = full if self.keep_full else None
        self._full_version = self.version

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Write the full averages into the plain ``model`` (the pipeline's copy).

        Raises:
            ValueError: If the averages are sharded and :meth:`gather` has not run since the last update.
        """
        from torch.distributed.tensor import DTensor

        if not any(isinstance(t, DTensor) for t in self.params):
            super().copy_to(model)
            return
        if self._full is None or self._full_version != self.version:
            raise ValueError(
                "sharded EMA: call gather() on every rank before copy_to (the full weights are assembled "
                "collectively)"
            )
        p_names, params, b_names, bufs = _named_state(model)
        _check_names(self.param_names, p_names, "parameters")
        _check_names(self.buffer_names, b_names, "buffers")
        for name, dst in zip(p_names + b_names, params + bufs):
            dst.copy_(self._full[name])


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def is_sharded_checkpoint(ckpt: Checkpoint) -> bool:
    """Whether ``ckpt`` was written by :func:`save_sharded_state`."""
    return ckpt.state.get("format") == FORMAT


def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer | None, ema: EMA | None) -> dict[str, Any]:
    """``{"model": …, "optim": …, "ema": …}`` keyed by parameter names (DTensors where sharded)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    module = unwrap(model)
    state: dict[str, Any] = {}
    if optimizer is not None:
        state["model"], state["optim"] = get_state_dict(module, optimizer)
    else:
        state["model"] = get_model_state_dict(module)
    if ema is not None:
        state["ema"] = ema.state_dict()  # the live averages: DCP loads into them in place
    return state


def save_sharded_state(
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    dist: DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    ema: EMA | None = None,
    config: Mapping[str, Any] | None = None,
    data_position: Mapping[str, Any] | None = None,
    extra_state: Mapping[str, Any] | None = None,
    extra_files: Callable[[Path], None] | None = None,
    keep: int | None = 3,
) -> Path | None:
    """Checkpoint everything needed to resume exactly, the tensors through DCP. Call on every rank.

    The same arguments and run-folder layout as :func:`multidiff.train.checkpoint.save_training_state`, with
    ``model.safetensors``, ``ema.safetensors`` and ``optimizer.safetensors`` replaced by ``dcp/`` (one file
    per rank plus ``.metadata``). A :class:`ShardedEMA` is gathered first (collectively), so that
    ``extra_files`` (rank 0, e.g. the pipeline folder) sees the full EMA weights.

    Returns:
        The checkpoint folder on rank 0, None elsewhere.
    """
    import torch.distributed.checkpoint as dcp

    run = Path(run_dir)
    if isinstance(ema, ShardedEMA):
        ema.gather()
    rng_all, rng_json = gather_rng_states()
    name = None
    if dist.is_main:
        run.mkdir(parents=True, exist_ok=True)
        for stale in run.glob(f"{_STAGING_PREFIX}*"):  # shards of a crashed save
            shutil.rmtree(stale, ignore_errors=True)
        name = f"{_STAGING_PREFIX}{step:08d}-{uuid.uuid4().hex[:8]}"
        (run / name).mkdir()
    staging = run / all_gather_objects(name)[0]  # rank 0's choice, on every rank
    try:
        with _quiet_single_process():
            dcp.save(_dcp_state(model, optimizer, ema), checkpoint_id=staging, no_dist=not _pg_active())
    except BaseException:
        if dist.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    barrier()  # every rank's shard is on disk
    path = None
    if dist.is_main:
        state = {
            "format": FORMAT,
            "config": dict(config or {}),
            "data": dict(data_position or {}),
            "rng": rng_json,
            "world_size": dist.world_size,
            "extra": dict(extra_state or {}),
        }

        def add_files(tmp: Path) -> None:
            os.replace(staging, tmp / DCP_NAME)  # same file system: a rename
            if extra_files is not None:
                extra_files(tmp)

        try:
            path = save_checkpoint(
                run, step, tensors={"rng": rng_all}, state=state, keep=keep, extra=add_files
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)  # only left when the write failed before the move
    barrier()
    return path


def restore_sharded_state(
    ckpt: Checkpoint,
    *,
    dist: DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    ema: EMA | None = None,
) -> int:
    """Load model, optimiser and EMA from a sharded checkpoint (resharded to this job's layout), and this
    rank's RNG state; returns the step to continue from. Call on every rank, after :func:`shard_model` and
    with the optimiser and EMA built on the (sharded) parameters.

    Raises:
        ValueError: If the checkpoint is not sharded, or does not fit the model (the checkpoint is named).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    if not is_sharded_checkpoint(ckpt):
        raise ValueError(f"{ckpt.path} is not a sharded (DCP) checkpoint")
    folder = ckpt.path / DCP_NAME
    state = _dcp_state(model, optimizer, ema)
    if "ema" in state:
        stored = _stored_keys(folder)
        if not any(k.startswith("ema.") for k in stored):
            raise ValueError(f"{folder} holds no EMA weights")
    try:
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=folder, no_dist=not _pg_active())
    except Exception as err:  # noqa: BLE001 - DCP's errors get the checkpoint's name
        raise ValueError(f"{folder} does not fit the model or optimiser: {err}") from err
    if optimizer is not None:
        set_state_dict(
            unwrap(model), optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"]
        )
    else:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(unwrap(model), state["model"])
    if isinstance(ema, ShardedEMA):
        ema.mark_changed()
    restore_rank_rng(ckpt, dist.rank)
    return ckpt.step


def _stored_keys(folder: Path) -> dict[str, Any]:
    from torch.distributed.checkpoint import FileSystemReader

    if not (folder / ".metadata").is_file():
        raise ValueError(f"{folder} is not a DCP checkpoint: .metadata is missing")
    return dict(FileSystemReader(str(folder)).read_metadata().state_dict_metadata)


def read_sharded_tensors(ckpt: Checkpoint | str | os.PathLike[str], part: str = "ema") -> dict[str, Tensor]:
    """Full tensors of one part (``"model"``, ``"ema"`` or ``"optim"``) of a sharded checkpoint, read in this
    process alone (no process group needed), keyed as in the module's ``state_dict()`` (for ``"optim"``:
    ``state.<param name>.<key>``).

    This is how a checkpoint written by several processes becomes a single-file model, e.g.
    ``save_file(read_sharded_tensors(ckpt, "ema"), "ema.safetensors")``.

    Raises:
        ValueError: If the folder is not a sharded checkpoint or holds no such part.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = ckpt.path if isinstance(ckpt, Checkpoint) else Path(ckpt)
    folder = path / DCP_NAME
    prefix = f"{part}."
    wanted = {
        k: torch.empty(tuple(m.size), dtype=m.properties.dtype)
        for k, m in _stored_keys(folder).items()
        if k.startswith(prefix) and isinstance(m, TensorStorageMetadata)
    }
    if not wanted:
        raise ValueError(f"{folder} holds no {part!r} tensors")
    with _quiet_single_process():
        dcp.load(wanted, checkpoint_id=folder, no_dist=True)
    return {k[len(prefix) :]: v for k, v in wanted.items()}
