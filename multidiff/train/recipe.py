"""What the train recipes (audio, image, video) share: their run options and their loop.

The recipes build data, adapter, model and objective in their own words; from there on the loop is the
same for every modality, so it lives here once.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from multidiff.core.ema import EMA
from multidiff.data.common import is_hidden
from multidiff.train.checkpoint import (
    Checkpoint,
    ResumeConfigError,
    check_resume_config,
    latest_checkpoint,
    restore_training_state,
    save_training_state,
)
from multidiff.train.distributed import DistInfo, barrier, wrap_ddp
from multidiff.train.monitor import RunLogger
from multidiff.train.runlock import (  # noqa: F401  (re-exported: train.run_lock, ...)
    LOCK_NAME,
    RunLockedError,
    TrainingInterrupted,
    interrupted,
    run_lock,
    stop_signals,
)
from multidiff.train.settings import check_settings
from multidiff.train.step import NonFiniteGuard, optimizer_step, set_lr, warmup_lr

__all__ = [
    "RESUME_MAY_CHANGE",
    "Training",
    "add_run_options",
    "cache_latents",
    "compile_backbone",
    "interrupted",
    "EmaToPipeline",
    "run_lock",
    "Session",
    "start_processes",
    "start_training",
    "stop_signals",
]

#: Settings that may change between a run and its resumption (everything else must match).
RESUME_MAY_CHANGE = (
    "steps",
    "ckpt_every",
    "keep",
    "preview_every",
    "preview_num",
    "log_every",
    "workers",
    "max_nonfinite",
    "sample_steps",
    "sampler",
    "accum",
    "threads",
    "device",
    "precision",
    "max_minutes",
    "compile",
    "fp8",  # the numbers of the matmuls, like --precision; runs saved before the option existed resume
    "fused_kernels",  # how the same numbers are computed (to rounding)
    "guidance",
    "report_to",
    "activation_checkpointing",
    "shard",  # the checkpoint format says how to load it; runs saved before the option existed resume
)


@dataclass(frozen=True)
class TrainDefaults:
    """The optimisation and bookkeeping defaults of a recipe preset (each overridden by its option)."""

    batch: int
    lr: float
    steps: int
    warmup: int
    ema_decay: float
    ckpt_every: int
    preview_every: int
    log_every: int
    sample_steps: int


#: The three sizes every train recipe offers; a recipe's preset table replaces what its modality needs.
TRAIN_DEFAULTS: dict[str, TrainDefaults] = {
    # a CPU, minutes
    "tiny": TrainDefaults(
        batch=8, lr=1e-3, steps=300, warmup=20, ema_decay=0.99, ckpt_every=100, preview_every=0, log_every=10,
        sample_steps=16,
    ),
    # one GPU
    "small": TrainDefaults(
        batch=32, lr=2e-4, steps=100_000, warmup=1000, ema_decay=0.999, ckpt_every=2000, preview_every=2000,
        log_every=50, sample_steps=32,
    ),
    # one or several GPUs, days
    "base": TrainDefaults(
        batch=64, lr=1e-4, steps=300_000, warmup=2000, ema_decay=0.9999, ckpt_every=5000, preview_every=5000,
        log_every=100, sample_steps=32,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class TrainSettings:
    """The typed settings the training functions of :mod:`multidiff.train` read (a recipe builds them once
    from its options with :meth:`from_args`; no argparse namespace reaches the library).

    Attributes: as the options of the same names (``--ema-decay`` is ``ema_decay``, and so on).
    """

    steps: int
    batch: int
    lr: float
    warmup: int
    ema_decay: float
    accum: int = 1
    grad_clip: float = 1.0
    precision: str = "bf16"
    device: str | None = None
    threads: int | None = None
    log_every: int = 50
    preview_every: int = 0
    ckpt_every: int = 1000
    keep: int = 3
    max_minutes: float | None = None
    max_nonfinite: int = 20
    allow_data_change: bool = False
    compile: bool | None = None
    fp8: str | None = None
    objective: str = "edm"
    p_mean: float | None = None
    p_std: float | None = None
    init: str | None = None
    lora: int | None = None
    lora_alpha: float | None = None
    lora_targets: str = "attention"
    report_to: str | None = None
    shard: bool = False
    activation_checkpointing: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainSettings:
        """The settings among a recipe's parsed options (after :func:`apply_defaults`); options the recipe
        does not have keep their defaults."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in vars(args).items() if k in fields})


def add_train_options(p: argparse.ArgumentParser) -> None:
    """The optimisation options of every diffusion train recipe (unset ones come from its preset through
    :func:`apply_defaults`) and class labels."""
    p.add_argument("--steps", type=int, help="total optimiser steps")
    p.add_argument("--batch", type=int, help="global batch size (over all processes and accumulation)")
    p.add_argument("--accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--warmup", type=int, help="linear learning-rate warm-up steps")
    p.add_argument("--ema-decay", type=float, help="EMA decay")
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument(
        "--labels", action="store_true", help="class-conditional on subfolder names / metadata.csv"
    )
    p.add_argument("--label-dropout", type=float, default=0.1, help="null-label probability (for CFG)")


def apply_defaults(args: argparse.Namespace, defaults: TrainDefaults, **more: Any) -> None:
    """Fill every option left unset (None) from ``defaults`` and from ``more`` (modality settings such as
    ``size=64``), then check every setting (:func:`check_settings`) before any work starts."""
    for name, value in {**dataclasses.asdict(defaults), **more}.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    check_settings(args)


def add_run_options(p: argparse.ArgumentParser, previews: str, items: str) -> None:
    """The options every train recipe has: seed, device, checkpoints, previews, logging, sampler.

    Args:
        p: the recipe's parser.
        previews: what a preview file is, for the help text ("wavs/PNGs", "pngs", "gifs").
        items: what one preview is ("clips", "images", "videos").
    """
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"), help="autocast on CUDA")
    p.add_argument("--workers", type=int, default=0, help="data-loading processes")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--ckpt-every", type=int, help="steps between checkpoints")
    p.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    p.add_argument("--preview-every", type=int, help=f"steps between preview {previews} (0: off)")
    p.add_argument("--preview-num", type=int, default=2, help=f"preview {items}")
    p.add_argument("--log-every", type=int, help="steps between log lines")
    p.add_argument(
        "--max-nonfinite", type=int, default=20, help="stop after this many non-finite steps in a row"
    )
    p.add_argument("--sample-steps", type=int, help="sampler steps for previews and the saved pipeline")
    p.add_argument("--sampler", default="dpmpp_2m", help="sampler for previews and the saved pipeline")
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the backbone: the first step compiles (a minute or two), later ones run "
        "faster (a U-Net channels-last throughout: UNet.compile); default: on with CUDA, off on the CPU "
        "(--no-compile turns it off)",
    )
    p.add_argument(
        "--fused-kernels",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="eager mode on CUDA: norms with their modulation, the DiT's gated residuals and rotary embeddings "
        "as multidiff's Triton kernels, and q, k, v as separate GEMMs (multidiff.nn.fused); "
        "--no-fused-kernels keeps plain PyTorch ops (a compiled backbone uses Inductor's fusions either "
        "way). Saved in the backbone's config",
    )
    p.add_argument(
        "--fp8",
        choices=("tensorwise", "rowwise"),
        help="DiT only: float8 matmuls for the blocks' attention and MLP linears (torchao, pip install "
        '"multidiff[fp8]"; CUDA of compute capability >= 8.9). 22-25%% less memory; faster only for wide '
        "models on many tokens (1.15x at width 2048 and 4096 tokens on an H200, slower at DiT-B/XL sizes)",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="resume although files of the data folder were added, removed or replaced since the checkpoint "
        "(the data order restarts on the new files; recorded in the run's log)",
    )
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this much training time in this run, with a checkpoint (rerun the command to go on)",
    )
    p.add_argument(
        "--report-to",
        help="also send the loss and the previews (audio, spectrograms, images, videos) to tensorboard, "
        'wandb, or both ("tensorboard,wandb"); pip install "multidiff[log]"',
    )
    p.add_argument(
        "--shard",
        action="store_true",
        help="FSDP2 under torchrun: split parameters, gradients, optimiser state and EMA across the processes "
        "(for models that do not fit one GPU); checkpoints are written through torch.distributed.checkpoint "
        "and resume on any number of processes",
    )
    p.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute each backbone block's activations in the backward pass (less memory, ~1/3 more compute)",
    )


def compile_backbone(backbone: nn.Module, args: TrainSettings, device: torch.device) -> bool:
    """With ``--fp8``, swap the DiT's token-wise linears for float8 ones (:mod:`multidiff.train.fp8`); then
    ``torch.compile`` the backbone in place when ``--compile`` says so, or by default on CUDA (where the
    small backbones' eager steps are bound by kernel launches); returns whether it did. Call it after the
    pipeline's copy of the denoiser was taken, so that only the trained module runs compiled and
    checkpoint keys stay those of the plain module."""
    if args.fp8 is not None:  # before compiling: float8 pays only compiled
        from multidiff.train.fp8 import to_float8_training

        to_float8_training(backbone, args.fp8)
    on = device.type == "cuda" if args.compile is None else bool(args.compile)
    if on:
        backbone.compile()
    return on


def cache_latents(datasets: list[Any], *, is_main: bool, workers: int = 0) -> None:
    """Encode every file of ``datasets`` (image or video folders with a latent cache) once, here, with each
    dataset's adapter where it is (moved to the device by the recipe; the main process encodes, the others
    wait; ``workers`` loader processes decode the files for it), then give each dataset a CPU copy of its
    adapter: loader workers are forked processes, which cannot use CUDA, and after this they only read the
    cache and normalise on the CPU."""
    if is_main:
        for ds in datasets:
            ds.build_cache(progress=True, workers=workers)
    barrier()
    copies: dict[int, nn.Module] = {}  # one CPU copy per adapter, however many datasets share it
    for ds in datasets:
        if id(ds.adapter) not in copies:
            copies[id(ds.adapter)] = copy.deepcopy(ds.adapter).cpu()
        ds.adapter = copies[id(ds.adapter)]


def check_data_position(ckpt: Any, position: dict[str, Any], step: int, allow_change: bool) -> None:
    """Refuse to resume when the data position stored in ``ckpt`` is not the one ``step`` leads to
    (``position``, the stream layout's), unless ``--allow-data-change``.

    Raises:
        ValueError: Naming the checkpoint, its stored position and the step.
    """
    if ckpt is not None and not allow_change and position != ckpt.state["data"]:
        raise ValueError(
            f"{ckpt.path}: its data position {ckpt.state['data']} does not follow from step {step}"
        )


def data_summary(dataset: Any, run: Path, *, kind: str, target: str, enabled: bool = True) -> str:
    """Say what training uses before it starts: files used and skipped (every skipped path and reason
    written to ``RUN/skipped.txt``), and the conversions applied to reach ``target`` (the training sample
    rate and channels, or frame size), counted over the files that need them. Returns the summary line."""
    entries, skipped = list(dataset.entries), list(getattr(dataset, "skipped", []))
    converted: dict[str, int] = {}
    for e in entries:
        info = getattr(e.info, "video", e.info)  # video entries wrap the file's own info
        if hasattr(info, "sample_rate") and info.sample_rate != dataset.config.sample_rate:
            key = f"resampled {info.sample_rate} Hz -> {dataset.config.sample_rate} Hz"
            converted[key] = converted.get(key, 0) + 1
        if (
            hasattr(info, "channels")
            and hasattr(dataset.config, "channels")
            and info.channels != dataset.config.channels
        ):
            key = f"{info.channels} -> {dataset.config.channels} channel(s)"
            converted[key] = converted.get(key, 0) + 1
        if hasattr(info, "height") and (info.height, info.width) != tuple(dataset.config.size):
            key = f"{info.height}x{info.width} resized to cover {target} and cropped"
            converted[key] = converted.get(key, 0) + 1
    line = f"data: {len(entries)} {kind} file(s) used, {len(skipped)} skipped"
    if skipped:
        line += f" (every path and reason in {run / 'skipped.txt'})"
    if converted:
        parts = sorted(converted.items(), key=lambda kv: -kv[1])
        line += "; " + "; ".join(f"{n} {what}" for what, n in parts[:4]) + (" ..." if len(parts) > 4 else "")
    line += f"; training on {target}"
    if enabled:
        from multidiff.train.runlock import mark_run

        mark_run(run, f"train {kind}")  # the run's first file: the folder is a run of this recipe from now
        if skipped:
            from multidiff.atomic import write_text

            write_text(run / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in skipped))
        print(line, flush=True)
    return line


def require_labels(dataset: Any, folder: str | os.PathLike[str]) -> None:
    """For ``--labels``: every file used has a class (from its subfolder or metadata), else a ValueError names
    the files without one."""
    missing = [e.rel for e in dataset.entries if e.label is None]
    if not dataset.classes:
        raise ValueError(f"--labels: {folder} has no label subfolders or metadata.csv labels")
    if missing:
        names = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise ValueError(
            f"--labels: {len(missing)} file(s) in {folder} have no label ({names}); give them one in "
            "metadata.csv or move them out of the folder"
        )


#: Config keys that describe the data folder's content (compared by :func:`check_resume`).
DATA_KEYS = ("num_files", "num_images", "data_fingerprint", "images_fingerprint")


def check_resume_early(run: Path, args: Any) -> None:
    """Before the data is read: refuse to resume ``run`` with a command-line setting that differs from its
    checkpoint's (a new ``--size`` would otherwise rebuild the frame cache before :func:`check_resume`
    refused). Only the options both name are compared, paths excepted (resolved later), so nothing is
    refused here that :func:`check_resume` would take."""
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        return
    saved = ckpt.state["config"]
    paths = ("out", "data", "images", "text_encoder", "init", "vae", "vocoder")
    now = {k: v for k, v in vars(args).items() if k in saved and k not in paths and not k.startswith("_")}
    ignore = (*RESUME_MAY_CHANGE, "allow_data_change")
    check_resume_config({k: saved[k] for k in now}, now, ignore=ignore, where=str(ckpt.path))


def check_resume(ckpt: Checkpoint, config: Mapping[str, Any], args: TrainSettings) -> None:
    """Refuse to resume ``ckpt`` with settings that matter changed (:func:`check_resume_config`), and with
    a changed data folder unless ``--allow-data-change`` (then the change is written to the run's log).

    Raises:
        ResumeConfigError: Naming what changed and what to do.
    """
    saved = ckpt.state["config"]
    changed = [k for k in (*DATA_KEYS, "data") if k in config and saved.get(k) != config.get(k)]
    if changed == ["data"] and not getattr(args, "allow_data_change", False):  # the same files, elsewhere
        raise ResumeConfigError(
            f"cannot resume from {ckpt.path}: it trained on {saved.get('data')}, this command gives "
            f"{config.get('data')} (the same files); rerun with --allow-data-change to continue on it, or use "
            "a new --out"
        )
    if changed and not getattr(args, "allow_data_change", False):
        counts = f"{saved.get('num_files')} files then, {config.get('num_files')} now"
        if _hidden_media(Path(str(config.get("data")))):
            counts += "; hidden files there, whose name or folder starts with '.', are no longer data"
        raise ResumeConfigError(
            f"cannot resume from {ckpt.path}: the data folder {config.get('data')} changed since it was written "
            f"({counts}; files added, removed, renamed or replaced); rerun with --allow-data-change to continue "
            "on the new data, or use a new --out"
        )
    ignore = (*RESUME_MAY_CHANGE, "allow_data_change", *(changed and (*DATA_KEYS, "data")))
    check_resume_config(saved, config, ignore=ignore, where=str(ckpt.path))
    if changed:
        from multidiff.train.monitor import LOG_NAME

        with open(Path(ckpt.path).parent / LOG_NAME, "a", encoding="utf-8") as f:
            note = f"resumed at step {ckpt.step} on changed data (--allow-data-change): {', '.join(changed)}"
            f.write(json.dumps({"step": ckpt.step, "event": note}) + "\n")
        print(note, flush=True)


def _hidden_media(root: Path) -> bool:
    """Whether the data folder ``root`` holds hidden media files (:func:`~multidiff.data.common.is_hidden`)."""
    from multidiff.io import AUDIO_FORMATS, IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    media = {*AUDIO_FORMATS, *IMAGE_EXTENSIONS, *VIDEO_EXTENSIONS}
    return root.is_dir() and any(
        f.suffix.lower() in media and f.is_file() and is_hidden(f, root) for f in root.rglob("*")
    )


class EmaToPipeline:
    """Copies the EMA weights of the trained module into the pipeline's module (previews and saving).

    With LoRA layers in the trained module, the copy goes through a shadow of it and the updates are merged
    into the base weights, so the pipeline stays a plain model; :meth:`save_lora` writes the adapter alone.

    Args:
        ema: The EMA of ``trained``.
        target: The pipeline's module under the names of ``trained`` without LoRA.
        trained: The module being trained (before any DDP wrapper).
    """

    def __init__(self, ema: EMA, target: nn.Module, trained: nn.Module) -> None:
        from multidiff.lora import has_lora

        self.ema, self.target = ema, target
        self.shadow = copy.deepcopy(trained) if has_lora(trained) else None

    def __call__(self) -> None:
        from multidiff.lora import merged_state_dict

        if self.shadow is None:
            self.ema.copy_to(self.target)
            return
        self.ema.copy_to(self.shadow)
        self.target.load_state_dict(merged_state_dict(self.shadow))

    def save_pipeline(self, pipe: Any, folder: Path, args: TrainSettings) -> None:
        """The EMA weights into ``pipe``, which is written to ``folder`` (with ``folder/lora`` for a LoRA)."""
        self()
        pipe.save_pretrained(folder)
        self.save_lora(folder, args)

    def save_lora(self, folder: Path, args: TrainSettings) -> None:
        """Write the LoRA (the EMA's) into ``folder/lora`` when training one."""
        from multidiff.lora import save_lora

        if self.shadow is not None:
            base = None if args.init is None else str(Path(args.init).resolve())
            save_lora(self.shadow, folder / "lora", base=base, rank=args.lora, alpha=args.lora_alpha,
                      targets=args.lora_targets)  # fmt: skip


def start_processes(args: TrainSettings) -> tuple[DistInfo, torch.device, int]:
    """The process group (torchrun / accelerate variables, or one process), this process's device, the CPU
    threads asked for, and the micro-batch per process and accumulation step.

    Raises:
        ValueError: If ``--batch`` is no multiple of processes x ``--accum``.
    """
    from multidiff.train.distributed import setup_distributed

    dist = setup_distributed(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    micro = args.batch // (dist.world_size * args.accum)
    if micro < 1 or micro * dist.world_size * args.accum != args.batch:
        raise ValueError(
            f"--batch {args.batch} must be a multiple of processes x --accum = {dist.world_size} x {args.accum}"
        )
    return dist, dist.device, micro


class Training(NamedTuple):
    """What :func:`start_training` returns: the module to train (DDP-wrapped when distributed), its
    optimiser, EMA and non-finite guard, and the step to start from."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    ema: EMA
    guard: NonFiniteGuard
    step: int


def start_training(net: nn.Module, args: TrainSettings, ckpt: Checkpoint | None, dist: DistInfo) -> Training:
    """AdamW (β = 0.9, 0.99, no weight decay) over ``net``'s trainable parameters, its EMA and the
    non-finite guard, all restored from ``ckpt`` when resuming; then the DDP wrapper.

    ``args`` supplies ``lr``, ``ema_decay`` and ``max_nonfinite``; a resumed checkpoint must hold the
    guard's state under ``extra["guard"]``. With ``args.shard`` the module is split by FSDP2 first
    (:func:`multidiff.train.sharded.shard_model`; no DDP then), the EMA is a
    :class:`~multidiff.train.sharded.ShardedEMA` and checkpoints go through torch.distributed.checkpoint.
    """
    from multidiff.train import sharded

    if args.shard or args.activation_checkpointing:  # FSDP2 before the optimiser sees the parameters
        if args.shard and args.lora:
            raise ValueError("--shard cannot train a --lora (few parameters, nothing to split); drop --shard")
        sharded.shard_model(net, dist if args.shard else DistInfo(), precision=args.precision,
                            activation_checkpointing=args.activation_checkpointing)  # fmt: skip
    params = [p for p in net.parameters() if p.requires_grad]  # a frozen text encoder stays out
    optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)
    ema = sharded.ShardedEMA(net, args.ema_decay, keep_full=dist.is_main) if args.shard else None
    ema = ema or EMA(net, decay=args.ema_decay)
    guard = NonFiniteGuard(max_consecutive=args.max_nonfinite)
    step = 0
    if ckpt is not None:
        dcp = sharded.is_sharded_checkpoint(ckpt)  # written with --shard
        restore = sharded.restore_sharded_state if dcp else restore_training_state
        if not dcp and sharded.is_sharded(net):
            raise ValueError(f"--shard cannot resume {ckpt.path} (written without it); drop --shard")
        step = restore(ckpt, dist=dist, model=net, optimizer=optimizer, ema=ema)
        guard.load_state_dict(ckpt.state["extra"]["guard"])
        if dist.is_main:
            print(f"resuming from {ckpt.path} (step {step})", flush=True)
    return Training(net if args.shard else wrap_ddp(net, dist), optimizer, ema, guard, step)


class Session:
    """One training session in a run folder, for a loop the recipe writes out (as EDM2's ``training_loop.py``).

    Entering it takes the run folder's lock and catches SIGINT/SIGTERM; :meth:`step` takes one optimiser step
    at the warmed-up learning rate (accumulation, autocast, clipping, the non-finite guard, the EMA) and logs;
    :meth:`end_step` writes the checkpoint when it is due, or when a signal or ``--max-minutes`` ends the
    session, and says whether to go on. A recipe's loop::

        with train.Session(run, args, training, ...) as session:
            while step < args.steps:
                step = session.step(step, [prepare(next(batches)) for _ in range(args.accum)], loss_fn)
                if session.preview_due(step):
                    preview(step)
                if not session.end_step(step, data_position(step)):
                    break

    Args:
        run: The run folder.
        args: The run options (:func:`add_run_options`, :func:`add_train_options`).
        training: What :func:`start_training` returned (model, optimiser, EMA, guard).
        dist: The process layout.
        device: The training device.
        config: The run's settings, stored in every checkpoint.
        extra_state: Called at each checkpoint for recipe state (e.g. adapter statistics).
        extra_files: Called with each checkpoint folder to add files (e.g. the pipeline).
    """

    def __init__(
        self,
        run: Path,
        args: TrainSettings,
        training: Training,
        *,
        dist: DistInfo,
        device: torch.device,
        config: Mapping[str, Any],
        extra_state: Callable[[], dict[str, Any]],
        extra_files: Callable[[Path], None],
    ) -> None:
        self.run, self.args, self.training, self.dist, self.device = run, args, training, dist, device
        self.config, self.extra_state, self.extra_files = config, extra_state, extra_files
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Session:
        self._stack.enter_context(run_lock(self.run, enabled=self.dist.is_main))
        self.stop = self._stack.enter_context(stop_signals())
        try:  # a tracker asked for but not installed: release the lock, then say so
            self.logger = RunLogger(
                self.run, self.args.steps, self.training.step, enabled=self.dist.is_main, tensorboard=False,
                report_to=self.args.report_to, config=self.config,
            )  # fmt: skip
        except BaseException:
            self._stack.close()
            raise
        self._stack.callback(self.logger.close)
        m = self.args.max_minutes
        self.deadline = None if m is None else time.monotonic() + 60 * m
        return self

    def __exit__(self, *exc: object) -> None:
        if self.args.shard and exc[0] is None:  # every rank: the full EMA for the final pipeline (rank 0)
            self.training.ema.gather()  # type: ignore[attr-defined]
        self._stack.close()

    def step(self, step: int, batches: list[Any], loss_fn: Callable[..., torch.Tensor]) -> int:
        """One optimiser step on this rank's micro-batches at the warmed-up learning rate; returns ``step + 1``."""
        a, t = self.args, self.training
        lr = warmup_lr(step, a.lr, a.warmup)
        set_lr(t.optimizer, lr)
        result = optimizer_step(
            t.model, t.optimizer, batches, loss_fn, step=step, device=self.device, precision=a.precision,
            grad_clip=a.grad_clip or None, ema=t.ema, guard=t.guard,
        )  # fmt: skip
        step += 1
        self.logger.count(result.samples * self.dist.world_size)
        if step % a.log_every == 0 or step == a.steps or not result.applied:
            self.logger.log(
                step, loss=result.loss, grad_norm=result.grad_norm, lr=lr, skipped=t.guard.skipped
            )
        return step

    def preview_due(self, step: int) -> bool:
        """Whether this process writes previews after ``step``."""
        due = bool(self.args.preview_every and step % self.args.preview_every == 0)
        if due and self.args.shard:  # every rank: the full EMA weights for rank 0's preview
            self.training.ema.gather()  # type: ignore[attr-defined]
        return self.dist.is_main and due

    def end_step(self, step: int, data_position: dict[str, Any]) -> bool:
        """Checkpoint after ``step`` when due, or when a signal or the time budget ends the session; False when
        the loop must stop (time budget). A signal raises :class:`TrainingInterrupted` after the checkpoint."""
        a, t = self.args, self.training
        if self.preview_due(step) and (self.run / "previews" / f"step-{step:08d}").is_dir():
            self.logger.log_previews(step, self.run / "previews" / f"step-{step:08d}")  # loss.png, trackers
        out_of_time, signum = _stop_reasons(self.deadline, self.stop["signum"], self.device, self.dist)
        if step % a.ckpt_every == 0 or step == a.steps or out_of_time or signum:
            from multidiff.train.sharded import save_sharded_state

            (save_sharded_state if a.shard else save_training_state)(
                self.run, step, dist=self.dist, model=t.model, optimizer=t.optimizer, ema=t.ema,
                config=self.config, data_position=data_position, extra_state=self.extra_state(),
                extra_files=self.extra_files, keep=a.keep,
            )  # fmt: skip
        if signum:
            raise interrupted({"signum": signum}, step, self.run)  # the command prints its message once
        if out_of_time and step < a.steps:
            self.logger.write(f"--max-minutes {a.max_minutes:g} reached at step {step}; rerun to continue")
            return False
        return True


def _stop_reasons(
    deadline: float | None, signum: int | None, device: torch.device, dist: DistInfo
) -> tuple[bool, int]:
    """``(past the time budget, stop signal or 0)``, agreed by every rank in one collective so they all stop
    at the same step: rank 0's clock decides the budget, a signal on any rank stops every rank."""
    past = deadline is not None and time.monotonic() > deadline
    if dist.world_size == 1:
        return past, int(signum or 0)
    flags = torch.tensor([float(past and dist.is_main), float(signum or 0)], device=device)
    torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    past_all, sig = flags.tolist()  # one host sync per step, and only with several processes
    return bool(past_all), int(sig)
