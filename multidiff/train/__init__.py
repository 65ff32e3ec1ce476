"""Training helpers a recipe calls, top to bottom (no Trainer object).

* :mod:`~multidiff.train.distributed`: process group from torchrun / accelerate variables, DDP wrapping.
* :mod:`~multidiff.train.data`: the deterministic data stream (per-epoch permutations, per-sample seeds).
* :mod:`~multidiff.train.step`: one optimiser step (accumulation, autocast, clipping, non-finite guard,
  EMA), warm-up, the per-sample-seeded diffusion loss.
* :mod:`~multidiff.train.checkpoint`: atomic checkpoints and exact resume.
* :mod:`~multidiff.train.monitor`: progress bar, ``log.jsonl``, optional TensorBoard.
* :mod:`~multidiff.train.preview`: preview wavs and mel PNGs.
* :mod:`~multidiff.train.captions`: caption conditioning (denoiser + text encoder as one module, per-sample
  caption dropout, the checks of a captioned folder).
* :mod:`~multidiff.train.recipe`: the run options and the loop the train recipes share.
* :mod:`~multidiff.train.family`: fine-tuning a pretrained family from its diffusers folder (``--init``).
"""

from multidiff.lora import add_lora_options, apply_lora
from multidiff.train.captions import (
    CaptionDenoiser,
    add_caption_options,
    caption_encoder,
    check_caption_dropout,
    distinct_captions,
    drop_captions,
    require_caption_metadata,
    trained_net,
)
from multidiff.train.checkpoint import (
    Checkpoint,
    ResumeConfigError,
    check_resume_config,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    resolve_pipeline_dir,
    restore_training_state,
    save_checkpoint,
    save_training_state,
)
from multidiff.train.data import DataPosition, StreamLayout, derive_seed, stream_loader
from multidiff.train.distributed import (
    DistInfo,
    barrier,
    cleanup_distributed,
    parse_device,
    setup_distributed,
    unwrap,
    wrap_ddp,
)
from multidiff.train.family import check_family_init, finetune_family, is_family_folder
from multidiff.train.finetune import add_init_option, finetune, init_adapter_stats, init_weights
from multidiff.train.monitor import RunLogger, read_log
from multidiff.train.objective import (
    Objective,
    add_model_options,
    check_model_options,
    make_backbone,
    make_objective,
)
from multidiff.train.preview import save_audio_previews, save_mel_png
from multidiff.train.recipe import (
    LOCK_NAME,
    RESUME_MAY_CHANGE,
    TRAIN_DEFAULTS,
    EmaToPipeline,
    RunLockedError,
    Session,
    TrainDefaults,
    Training,
    TrainingInterrupted,
    TrainSettings,
    add_run_options,
    add_train_options,
    apply_defaults,
    cache_latents,
    check_data_position,
    check_resume,
    check_resume_early,
    compile_backbone,
    data_summary,
    interrupted,
    require_labels,
    run_lock,
    start_processes,
    start_training,
    stop_signals,
)
from multidiff.train.runlock import RUN_MARKER, check_run_folder, mark_run
from multidiff.train.settings import check_batch_bytes
from multidiff.train.step import (
    NonFiniteGuard,
    NonFiniteLossError,
    StepResult,
    autocast,
    diffusion_loss,
    drop_labels,
    optimizer_step,
    set_lr,
    warmup_lr,
)

__all__ = [
    "check_family_init",
    "finetune_family",
    "is_family_folder",
    "RESUME_MAY_CHANGE",
    "add_run_options",
    "EmaToPipeline",
    "add_lora_options",
    "apply_lora",
    "add_init_option",
    "init_adapter_stats",
    "init_weights",
    "finetune",
    "LOCK_NAME",
    "parse_device",
    "RUN_MARKER",
    "check_batch_bytes",
    "check_run_folder",
    "mark_run",
    "RunLockedError",
    "TrainingInterrupted",
    "interrupted",
    "run_lock",
    "stop_signals",
    "add_train_options",
    "apply_defaults",
    "check_resume",
    "check_resume_early",
    "data_summary",
    "require_labels",
    "TRAIN_DEFAULTS",
    "TrainDefaults",
    "TrainSettings",
    "Objective",
    "add_model_options",
    "check_model_options",
    "make_backbone",
    "make_objective",
    "barrier",
    "cache_latents",
    "check_data_position",
    "compile_backbone",
    "Session",
    "start_processes",
    "start_training",
    "Training",
    "CaptionDenoiser",
    "add_caption_options",
    "caption_encoder",
    "trained_net",
    "Checkpoint",
    "DataPosition",
    "DistInfo",
    "NonFiniteGuard",
    "NonFiniteLossError",
    "ResumeConfigError",
    "RunLogger",
    "StepResult",
    "StreamLayout",
    "autocast",
    "check_caption_dropout",
    "check_resume_config",
    "cleanup_distributed",
    "derive_seed",
    "diffusion_loss",
    "distinct_captions",
    "drop_captions",
    "drop_labels",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "optimizer_step",
    "read_log",
    "require_caption_metadata",
    "resolve_pipeline_dir",
    "restore_training_state",
    "save_audio_previews",
    "save_checkpoint",
    "save_mel_png",
    "save_training_state",
    "set_lr",
    "setup_distributed",
    "stream_loader",
    "unwrap",
    "warmup_lr",
    "wrap_ddp",
]
