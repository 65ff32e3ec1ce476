"""Atomic training checkpoints and exact resume: safetensors for tensors, JSON for everything else.

A run folder looks like::

    RUN/
      ckpt-00001000/           one checkpoint (the last ``keep`` are kept)
        model.safetensors      the trained module's state dict
        ema.safetensors        EMA weights
        optimizer.safetensors  optimiser state tensors (structure in state.json); a run with several
                               optimisers has optimizer-<name>.safetensors for each instead
        rng.safetensors        torch CPU/CUDA and numpy RNG states of every rank
        state.json             step, data position, RNG (python), optimiser structure, run config, extras
        ...                    anything the recipe adds (e.g. pipeline/, or vocoder/ and vae/: the result)
      latest                   text file naming the newest checkpoint folder
      log.jsonl
      ...                      the result copied out of the newest checkpoint, when the recipe publishes it
                               (:func:`publish_result`: a vocoder or VAE folder that loads from RUN itself)

Writing is atomic: everything goes into a hidden temporary folder inside the run folder, every file is
fsync'ed, and the folder is renamed into place (:func:`multidiff.atomic.replacing`, atomic on POSIX within
one file system); the ``latest`` pointer is replaced the same way. A crash at any point leaves the previous
checkpoint intact, and :func:`latest_checkpoint` falls back to the newest complete folder if the pointer is
stale. Nothing is pickled: optimiser state is flattened into tensors plus a JSON structure.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from multidiff.atomic import TMP_PREFIX, replacing, write_text
from multidiff.train.distributed import DistInfo, all_gather_objects, barrier, unwrap

__all__ = [
    "CKPT_PREFIX",
    "LATEST_NAME",
    "Checkpoint",
    "ResumeConfigError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "verify_checkpoint",
    "list_checkpoints",
    "optimizer_state_to_tensors",
    "optimizer_state_from_tensors",
    "rng_state",
    "set_rng_state",
    "check_resume_config",
    "save_training_state",
    "restore_training_state",
    "resolve_pipeline_dir",
    "publish_result",
]

CKPT_PREFIX = "ckpt-"
LATEST_NAME = "latest"
STATE_NAME = "state.json"
_CKPT_RE = re.compile(rf"^{CKPT_PREFIX}(\d+)$")
_OPT_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


class ResumeConfigError(ValueError):
    """The run folder holds a checkpoint written with settings that differ from the current ones."""


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def _step_of(name: str) -> int | None:
    m = _CKPT_RE.match(name)
    return int(m.group(1)) if m else None


@dataclass
class Checkpoint:
    """A checkpoint folder on disk; tensors are read on demand.

    Attributes:
        path: The ``ckpt-<step>`` folder.
        step: Optimiser steps taken when it was written.
        state: The contents of ``state.json``.
    """

    path: Path
    step: int
    state: dict[str, Any] = field(repr=False)

    def has(self, name: str) -> bool:
        """Whether ``<name>.safetensors`` exists in the folder."""
        return (self.path / f"{name}.safetensors").is_file()

    def tensors(self, name: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Read ``<name>.safetensors``.

        Raises:
            ValueError: If the file is missing or unreadable (the path is named).
        """
        from safetensors.torch import load_file

        path = self.path / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(f"checkpoint {self.path} has no {path.name}")
        try:
            return load_file(str(path), device=str(device))
        except Exception as err:  # noqa: BLE001 - any safetensors failure gets the file name
            raise ValueError(f"could not read {path}: {err}") from err


def list_checkpoints(run_dir: str | os.PathLike[str]) -> list[Checkpoint]:
    """Complete checkpoints in ``run_dir``, oldest first (folders without ``state.json`` are ignored)."""
    run = Path(run_dir)
    if not run.is_dir():
        return []
    found = []
    for p in run.iterdir():
        step = _step_of(p.name)
        if step is not None and p.is_dir() and (p / STATE_NAME).is_file():
            found.append((step, p))
    return [load_checkpoint(p) for _, p in sorted(found)]


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a checkpoint folder (reads ``state.json``; tensors are read on demand).

    Raises:
        ValueError: If the folder or its ``state.json`` is missing or malformed.
    """
    path = Path(path)
    state_file = path / STATE_NAME
    if not state_file.is_file():
        raise ValueError(f"{path} is not a checkpoint folder: {STATE_NAME} is missing")
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read {state_file}: {err}") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{state_file} has no integer 'step'")
    return Checkpoint(path, state["step"], state)


def latest_checkpoint(run_dir: str | os.PathLike[str]) -> Checkpoint | None:
    """The newest checkpoint of a run that loads, or None.

    Candidates, newest first: the folder the ``latest`` pointer names, then every complete folder by step.
    Each is checked (``state.json`` parses, every ``*.safetensors`` file's header and size agree); one that
    fails, e.g. corrupted on disk after it was written, is skipped with a warning naming it and why, and the
    previous one is taken.
    """
    import warnings

    run = Path(run_dir)
    candidates: list[Path] = []
    pointer = run / LATEST_NAME
    if pointer.is_file():
        name = pointer.read_text(encoding="utf-8", errors="replace").strip()
        if _step_of(name) is not None and (run / name).is_dir():
            candidates.append(run / name)
    if run.is_dir():
        found = sorted((s, p) for p in run.iterdir() if (s := _step_of(p.name)) is not None and p.is_dir())
        candidates += [p for _, p in reversed(found) if p not in candidates]
    for path in candidates:
        try:
            return verify_checkpoint(path)
        except ValueError as err:
            if (path / STATE_NAME).is_file():  # an incomplete folder is a crashed write, not news
                warnings.warn(f"skipping checkpoint {path}: {err}", stacklevel=2)
    return None


def verify_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """:func:`load_checkpoint` plus a check of every tensor file's header against its size (no tensor is
    read), so a truncated or corrupted file is found before training starts.

    Raises:
        ValueError: Naming the file and the problem.
    """
    from safetensors import safe_open

    ckpt = load_checkpoint(path)
    if ckpt.state.get("format") == "dcp" and not (Path(path) / "dcp" / ".metadata").is_file():
        raise ValueError("dcp/.metadata is missing (a sharded checkpoint without its index)")
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as handle:
                keys = list(handle.keys())
                if keys:
                    handle.get_slice(keys[-1])  # the last tensor's extent must lie inside the file
        except Exception as err:  # noqa: BLE001 - any safetensors failure names the file
            raise ValueError(f"{f.name} is unreadable ({err})") from None
    return ckpt


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    tensors: Mapping[str, Mapping[str, torch.Tensor]],
    state: Mapping[str, Any],
    keep: int | None = 3,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``ckpt-<step>`` atomically and point ``latest`` at it; keep the newest ``keep`` checkpoints.

    Call on one process only (rank 0).

    Args:
        run_dir: The run folder (created if missing).
        step: The step to record; names the folder.
        tensors: ``{file stem: state dict}``; each becomes ``<stem>.safetensors``.
        state: JSON-serialisable dict, written as ``state.json`` (``step`` is added).
        keep: Number of checkpoints to keep (None keeps all).
        extra: Called with the temporary folder before the rename, to add files (e.g. a pipeline).

    Returns:
        The final checkpoint folder.
    """
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    for stale in run.glob(f"{TMP_PREFIX}{CKPT_PREFIX}*"):  # leftovers of a crashed write
        shutil.rmtree(stale, ignore_errors=True)
    name = f"{CKPT_PREFIX}{step:08d}"
    final = run / name
    from multidiff.serialize import save_tensors

    with replacing(final, durable=True) as tmp:  # the same step saved again replaces the old one whole
        tmp.mkdir()
        for stem, tdict in tensors.items():
            save_tensors(tmp / f"{stem}.safetensors", tdict)
        if extra is not None:
            extra(tmp)  # what it writes (pipeline/, vocoder/, ...) is fsync'ed with the rest
        _write_json(tmp / STATE_NAME, {**state, "step": int(step)})  # written last
    write_text(run / LATEST_NAME, name + "\n", durable=True)
    if keep is not None:
        for ckpt in list_checkpoints(run)[:-keep]:
            if ckpt.path.name != name:
                shutil.rmtree(ckpt.path, ignore_errors=True)
    return final


def publish_result(result_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str]) -> list[Path]:
    """Copy the files of a checkpoint's result folder (e.g. ``ckpt-<step>/vocoder``) into the run folder, so
    the newest result loads from ``RUN`` itself; ``config.json`` goes last.

    Each file is copied to a temporary name, fsync'ed and renamed into place, so a reader sees the old or the
    new file, never a partial one. Call on one process only (rank 0).

    Returns:
        The files written.
    """
    src, run = Path(result_dir), Path(run_dir)
    for stale in run.glob(f"{TMP_PREFIX}*.*"):  # copies a killed publish left behind
        if stale.is_file():
            stale.unlink(missing_ok=True)
    files = sorted((p for p in src.iterdir() if p.is_file()), key=lambda p: (p.name == "config.json", p.name))
    written = []
    for f in files:
        with replacing(run / f.name, durable=True) as tmp:
            shutil.copyfile(f, tmp)
        written.append(run / f.name)
    return written


# ---------------------------------------------------------------------------------------------------
# Optimiser state as tensors + JSON
# ---------------------------------------------------------------------------------------------------


def _jsonable(value: Any, where: str) -> Any:
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    raise ValueError(f"{where}: cannot store a {type(value).__name__} in JSON")


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten ``optimizer.state_dict()`` into ``(tensors, structure)``: tensors for safetensors, the rest JSON.

    Per-parameter tensors become ``state.<param id>.<key>``; tensors inside param groups (e.g. a tensor
    learning rate) become ``group.<i>.<key>``.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    state_json: dict[str, dict[str, Any]] = {}
    for pid, pstate in sd["state"].items():
        entry: dict[str, Any] = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
                entry[key] = {"tensor": True}
            else:
                entry[key] = {"value": _jsonable(value, f"optimizer state {pid}.{key}")}
        state_json[str(pid)] = entry
    groups = []
    for i, group in enumerate(sd["param_groups"]):
        g: dict[str, Any] = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"group.{i}.{key}"] = value
                g[key] = {"tensor": True}
            else:
                g[key] = {"value": _jsonable(value, f"optimizer param group {i}.{key}")}
        groups.append(g)
    return tensors, {"state": state_json, "param_groups": groups}


def _like(value: Any, template: Any) -> Any:
    """JSON lists back to tuples where the live optimiser uses tuples (e.g. Adam's betas)."""
    if isinstance(template, tuple) and isinstance(value, list):
        return tuple(value)
    return value


def optimizer_state_from_tensors(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor], structure: Mapping[str, Any]
) -> None:
    """Load a state flattened by :func:`optimizer_state_to_tensors` into ``optimizer``.

    Raises:
        ValueError: If the structure does not match the optimiser (a different model or optimiser).
    """
    live = optimizer.state_dict()["param_groups"]
    groups = structure["param_groups"]
    if len(groups) != len(live):
        raise ValueError(f"checkpoint has {len(groups)} optimiser param groups, the optimiser {len(live)}")
    param_groups = []
    for i, (g, lg) in enumerate(zip(groups, live)):
        out: dict[str, Any] = {}
        for key, spec in g.items():
            out[key] = tensors[f"group.{i}.{key}"] if "tensor" in spec else _like(spec["value"], lg.get(key))
        if len(out.get("params", [])) != len(lg["params"]):
            raise ValueError(
                f"optimiser param group {i} has {len(out.get('params', []))} parameters in the checkpoint "
                f"and {len(lg['params'])} now; the model differs"
            )
        param_groups.append(out)
    state: dict[int, dict[str, Any]] = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {
            key: tensors[f"state.{pid}.{key}"] if "tensor" in spec else spec["value"]
            for key, spec in entry.items()
        }
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


# ---------------------------------------------------------------------------------------------------
# RNG state
# ---------------------------------------------------------------------------------------------------


def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """This process's RNG states: torch CPU and CUDA, numpy's global RNG, python ``random``.

    Returns:
        ``(tensors, json)``: the byte states as tensors, python's state as JSON.
    """
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, py_gauss = random.getstate()
    meta = {
        "numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss": py_gauss},
    }
    return tensors, meta


def set_rng_state(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    cuda = sorted((int(k.split(".")[1]), v) for k, v in tensors.items() if k.startswith("cuda."))
    if cuda and torch.cuda.is_available():
        n = torch.cuda.device_count()
        for i, s in cuda:
            if i < n:
                torch.cuda.set_rng_state(s.to(torch.uint8), i)
    m = meta["numpy"]
    np.random.set_state(
        (m["kind"], tensors["numpy"].numpy().astype(np.uint32), m["pos"], m["has_gauss"], m["gauss"])
    )
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


# ---------------------------------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------------------------------

_MISSING = "<not set>"


def gather_rng_states() -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Every rank's RNG state (call on every rank): tensors keyed ``rank{r}.NAME`` and each rank's JSON part,
    as a checkpoint stores them."""
    tensors: dict[str, torch.Tensor] = {}
    metas = []
    for rank, (t, meta) in enumerate(all_gather_objects(rng_state())):
        tensors.update({f"rank{rank}.{k}": v for k, v in t.items()})
        metas.append(meta)
    return tensors, metas


def restore_rank_rng(ckpt: Checkpoint, rank: int) -> None:
    """Restore rank ``rank``'s RNG state from ``ckpt``; a run resumed on more processes than it was saved from
    leaves the other ranks as seeded."""
    rng, metas = ckpt.tensors("rng"), ckpt.state["rng"]
    if rank < len(metas):
        prefix = f"rank{rank}."
        set_rng_state({k[len(prefix) :]: v for k, v in rng.items() if k.startswith(prefix)}, metas[rank])


def check_resume_config(
    saved: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    ignore: Iterable[str] = (),
    where: str = "checkpoint",
) -> None:
    """Refuse to resume when a setting that matters differs between the checkpoint and now.

    Both configs are compared after a JSON round trip (so tuples equal lists).

    Args:
        saved: The run config stored in the checkpoint.
        current: The run config of this invocation.
        ignore: Keys allowed to differ (e.g. the total number of steps, logging intervals).
        where: Named in the message (the checkpoint path).

    Raises:
        ResumeConfigError: Listing every differing key with both values.
    """
    a = json.loads(json.dumps(dict(saved), sort_keys=True, default=str))
    b = json.loads(json.dumps(dict(current), sort_keys=True, default=str))
    skip = set(ignore) | {k for k in (*a, *b) if k.startswith("_") or k.endswith("_given")}  # bookkeeping
    diffs = [
        f"{k}: {a.get(k, _MISSING)!r} in the checkpoint, {b.get(k, _MISSING)!r} now"
        for k in sorted(set(a) | set(b))
        if k not in skip and a.get(k, _MISSING) != b.get(k, _MISSING)
    ]
    if diffs:  # one line, as every error of the command
        raise ResumeConfigError(
            f"cannot resume from {where}: it was written with other settings ({'; '.join(diffs)}); rerun with "
            "the same settings to resume, or give a new --out to start a new run"
        )


def _named_optimizers(
    optimizer: torch.optim.Optimizer | None, optimizers: Mapping[str, torch.optim.Optimizer] | None
) -> dict[str, torch.optim.Optimizer]:
    """``{file stem: optimiser}``: ``optimizer`` alone, or ``optimizer-<name>`` for each of ``optimizers``."""
    if optimizer is not None and optimizers is None:
        return {"optimizer": optimizer}
    if optimizer is not None or not optimizers:
        raise ValueError("give either optimizer= or a non-empty optimizers=, not both")
    bad = [n for n in optimizers if not _OPT_NAME_RE.match(n)]
    if bad:
        raise ValueError(f"optimiser names must be letters, digits and _ (they name files), got {bad}")
    return {f"optimizer-{n}": opt for n, opt in optimizers.items()}


def _optimizer_structures(structures: dict[str, Any], *, several: bool) -> dict[str, Any]:
    """The state.json entries: ``optimizer`` (one, as always) or ``optimizers`` by file stem."""
    return {"optimizers": structures} if several else {"optimizer": structures["optimizer"]}


def save_training_state(
    run_dir: str | os.PathLike[str],
    step: int,
    *,
    dist: DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    ema: Any | None = None,
    config: Mapping[str, Any] | None = None,
    data_position: Mapping[str, Any] | None = None,
    extra_state: Mapping[str, Any] | None = None,
    extra_files: Callable[[Path], None] | None = None,
    keep: int | None = 3,
) -> Path | None:
    """Checkpoint everything needed to resume exactly. Call on every rank (RNG states are gathered).

    Args:
        run_dir: The run folder.
        step: Optimiser steps taken so far.
        dist: This process's place in the job.
        model: The trained module (a DDP wrapper is unwrapped); several modules go in one ``nn.ModuleDict``.
        optimizer: Its optimiser (``optimizer.safetensors``).
        optimizers: Instead of ``optimizer``, several by name (e.g. ``{"g": opt_g, "d": opt_d}`` for a GAN),
            each in ``optimizer-<name>.safetensors``.
        ema: An object with ``state_dict() -> dict[str, Tensor]`` (e.g. :class:`multidiff.core.ema.EMA`).
        config: The run config, checked on resume by :func:`check_resume_config`.
        data_position: Where the data stream stands (e.g. ``{"epoch": e, "index": i}``).
        extra_state: Further JSON (guard counters, adapter settings, …).
        extra_files: Adds files to the checkpoint folder before it is renamed into place (rank 0).
        keep: Checkpoints to keep.

    Returns:
        The checkpoint folder on rank 0, None elsewhere.
    """
    named = _named_optimizers(optimizer, optimizers)
    rng_all, rng_json = gather_rng_states()
    path = None
    if dist.is_main:
        tensors: dict[str, Mapping[str, torch.Tensor]] = {"model": unwrap(model).state_dict()}
        if ema is not None:
            tensors["ema"] = ema.state_dict()
        structures: dict[str, Any] = {}
        for stem, opt in named.items():
            tensors[stem], structures[stem] = optimizer_state_to_tensors(opt)
        tensors["rng"] = rng_all
        state = {
            "config": dict(config or {}),
            "data": dict(data_position or {}),
            **_optimizer_structures(structures, several=optimizers is not None),
            "rng": rng_json,
            "world_size": dist.world_size,
            "extra": dict(extra_state or {}),
        }
        path = save_checkpoint(run_dir, step, tensors=tensors, state=state, keep=keep, extra=extra_files)
    barrier()
    return path


def restore_training_state(
    ckpt: Checkpoint,
    *,
    dist: DistInfo,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    ema: Any | None = None,
) -> int:
    """Load model, EMA, optimiser(s) and this rank's RNG state from ``ckpt``; returns the step to continue from.

    ``optimizers`` restores a checkpoint saved with ``optimizers=`` (the same names); ``optimizer`` one saved
    with ``optimizer=``. Neither skips the optimiser state.

    Raises:
        ValueError: If a file is missing, the weights do not fit the model or the optimisers differ from the
            saved ones (the checkpoint is named).
    """
    device = next(iter(unwrap(model).parameters())).device
    state = ckpt.tensors("model", device=device)
    try:
        unwrap(model).load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ckpt.path}/model.safetensors does not fit the model: {err}") from err
    if ema is not None:
        ema.load_state_dict(ckpt.tensors("ema", device=device))
    if optimizer is not None or optimizers is not None:
        named = _named_optimizers(optimizer, optimizers)
        saved = ckpt.state.get("optimizers", {"optimizer": ckpt.state.get("optimizer")})
        if set(saved) != set(named):
            raise ValueError(
                f"{ckpt.path} holds the optimiser state of {sorted(saved)}, but {sorted(named)} were given"
            )
        for stem, opt in named.items():
            optimizer_state_from_tensors(opt, ckpt.tensors(stem, device=device), saved[stem])
    restore_rank_rng(ckpt, dist.rank)
    return ckpt.step


def resolve_pipeline_dir(path: str | os.PathLike[str]) -> Path:
    """Find a saved pipeline from a pipeline folder, a run folder (``RUN/pipeline``) or its latest checkpoint.

    Raises:
        ValueError: If nothing loadable is found (the folder is named).
    """
    p = Path(path)
    if (p / "config.json").is_file():
        return p
    if (p / "pipeline" / "config.json").is_file():
        return p / "pipeline"
    ckpt = latest_checkpoint(p)
    if ckpt is not None and (ckpt.path / "pipeline" / "config.json").is_file():
        return ckpt.path / "pipeline"
    for family in (p, p / "pipeline"):  # a pretrained family's folder, or a run that fine-tuned one
        if (family / "model_index.json").is_file():
            raise ValueError(
                f"{family} is a diffusers folder of a pretrained family, not a multidiff pipeline: load it "
                f"in Python with multidiff.families.load_family('{family}') (the generate commands do not take "
                "family folders yet)"
            )
    raise ValueError(
        f"{p} holds no pipeline: expected {p}/config.json, {p}/pipeline/config.json or a checkpoint with a "
        "pipeline/ folder (a run of multidiff train audio, video or image writes them)"
    )
