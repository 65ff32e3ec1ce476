"""Fine-tuning a pretrained family from its diffusers folder (``train video --init FOLDER``): the family's
objective equals diffusers' training loss, whole fine-tuning writes a diffusers folder of the same family that
loads and samples, a LoRA trains only its layers and loads on the base, and what cannot apply is refused."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from test_family_animatediff import FRAMES, SIZE, make_animatediff_folder
from test_video_dataset import moving_square

from multidiff.cli import main as cli
from multidiff.io import write_video

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_animatediff_folder(tmp_path_factory.mktemp("ad") / "ad")


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """Four captioned clips (a moving square in two shades), words the tiny tokenizer knows."""
    root = tmp_path_factory.mktemp("clips")
    rows = []
    for i, (shade, caption) in enumerate([(230, "a cat runs"), (120, "a dog runs in the park")] * 2):
        write_video(root / f"clip{i}.gif", moving_square(FRAMES + 2, SIZE, SIZE, shade), 8)
        rows.append({"path": f"clip{i}.gif", "caption": caption})
    return write_metadata(root, rows)


def write_metadata(root: Path, rows: list[dict[str, str]]) -> Path:
    """``root/metadata.csv`` with a ``path,caption`` row per file; returns ``root``."""
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "caption"])
        w.writeheader()
        w.writerows(rows)
    return root


def _args(clips: Path, out: Path, base: Path, *more: str) -> list[str]:
    return ["train", "video", "--data", str(clips), "--out", str(out), "--init", str(base), "--captions",
            "--frames", str(FRAMES), "--batch", "2", "--device", "cpu", "--workers", "0", "--lr", "1e-3",
            "--warmup", "0", *more]  # fmt: skip


def test_the_family_objective_is_diffusers_epsilon_loss(base) -> None:
    """What ``--init`` trains: DDPM's uniform timesteps on the family's VP table and the ε-loss (Ho et al.
    2020). multidiff's per-sample loss equals ``|ε̂ - ε|²`` with diffusers' ``add_noise`` and a direct U-Net
    call at the same timestep."""
    from multidiff import train
    from multidiff.core.losses import default_objective
    from multidiff.families import load_family
    from multidiff.families.animatediff import encode_clip_text
    from multidiff.train.step import per_sample_draws

    pipe = load_family(base)
    dist, weighting = default_objective(pipe.denoiser.schedule)
    assert weighting == "snr" and pipe.denoiser.prediction == "eps"
    torch.manual_seed(0)
    x0 = torch.randn(2, 4, FRAMES, SIZE // 2, SIZE // 2)
    context = encode_clip_text(pipe.tokenizer, pipe.text_model, ["a cat runs", "a dog"])
    seeds = [3, 11]
    ours = train.diffusion_loss(
        pipe.denoiser, x0, dist, seeds=seeds, weighting=weighting, cond={"context": context}
    )
    sigma, noise = per_sample_draws(seeds, x0.shape[1:], dist, x0.device)
    sched = diffusers.DDIMScheduler.from_pretrained(str(base / "scheduler"))
    t = pipe.denoiser.schedule.sigma_to_t(sigma).round().long()  # (B,) the discrete timesteps drawn
    assert torch.allclose(pipe.denoiser.schedule.t_to_sigma(t.double()).float(), sigma.float(), rtol=1e-5)
    noisy = sched.add_noise(x0, noise, t)
    unet = pipe.denoiser.backbone.unet
    with torch.no_grad():
        eps = unet(noisy, t, encoder_hidden_states=context.repeat_interleave(FRAMES, 0)).sample
    theirs = (eps - noise).pow(2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-4, atol=1e-6)


def test_whole_fine_tuning_writes_a_diffusers_folder_of_the_family(base, clips, tmp_path, capsys) -> None:
    from multidiff.families import load_family

    run = tmp_path / "run"
    assert cli(_args(clips, run, base, "--steps", "3")) == 0
    out = run / "pipeline"
    assert (out / "model_index.json").is_file() and not (out / "motion_adapter").exists()
    tuned, ref = load_family(out), load_family(base)
    theirs = dict(ref.denoiser.backbone.unet.named_parameters())
    moved = [k for k, v in tuned.denoiser.backbone.unet.named_parameters() if not torch.equal(v, theirs[k])]
    assert len(moved) > 0.5 * len(theirs)  # the whole model trained (EMA weights saved)
    for a, b in zip(tuned.adapter.parameters(), ref.adapter.parameters()):  # the VAE stayed frozen
        assert torch.equal(a, b)
    for a, b in zip(tuned.text_model.parameters(), ref.text_model.parameters()):  # so did the text encoder
        assert torch.equal(a, b)
    video = tuned.generate(1, FRAMES, SIZE, prompt="a cat runs", steps=2, seed=0)
    assert video.shape == (1, FRAMES, SIZE, SIZE, 3) and video.dtype == torch.uint8
    # the generate command names what the folder is and what to do instead
    capsys.readouterr()  # the training output so far
    assert (
        cli(["generate", "video", "--ckpt", str(run), "--prompt", "a cat", "--out", str(tmp_path / "g")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("multidiff: error:") and "load_family" in err and "pretrained family" in err
    # the same command again resumes: nothing left to train, the folder is written again
    assert cli(_args(clips, run, base, "--steps", "3")) == 0
    assert (out / "model_index.json").is_file()


def test_lora_trains_only_its_layers_and_loads_on_the_base(base, clips, tmp_path) -> None:
    from multidiff.families import load_family
    from multidiff.lora import load_lora

    run = tmp_path / "lora"
    assert cli(_args(clips, run, base, "--steps", "3", "--lora", "2")) == 0
    assert (run / "lora").is_dir() and not (run / "pipeline").exists()
    size = sum(f.stat().st_size for f in (run / "lora").iterdir())
    unet_bytes = sum(f.stat().st_size for f in (base / "unet").iterdir())
    assert size < unet_bytes / 3
    ref = load_family(base)
    tuned = load_lora(load_family(base), run / "lora")
    theirs = dict(ref.denoiser.named_parameters())
    moved = {k for k, v in tuned.denoiser.named_parameters() if not torch.equal(v, theirs[k])}
    assert moved and all(k.rsplit(".", 2)[-2] in ("to_q", "to_k", "to_v", "0") for k in moved), sorted(moved)[
        :4
    ]


def test_what_cannot_apply_is_refused_before_any_work(base, clips, tmp_path, capsys) -> None:
    cases = [
        (_args(clips, tmp_path / "a", base, "--steps", "1", "--labels"), "--labels does not apply"),
        ([a for a in _args(clips, tmp_path / "b", base, "--steps", "1") if a != "--captions"], "--captions"),
        (["train", "audio", "--data", str(clips), "--out", str(tmp_path / "c"), "--init", str(base)],
         "makes video: fine-tune it with multidiff train video"),
    ]  # fmt: skip
    for argv, want in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("multidiff: error:") and want in err, err
        assert not Path(argv[argv.index("--out") + 1]).exists()


# ------------------------------------------------------------------------------------------- Stable Audio
def test_cosine_time_draws_t_uniformly_in_the_sigma_range() -> None:
    """CosineTime: σ = tan(πt/2) with t uniform between t(σ_min) and t(σ_max); its quantiles are exact."""
    import math

    from multidiff.core.losses import CosineTime
    from multidiff.interop.diffusers import CosineEDMSchedule

    dist, sched = CosineTime(0.3, 500.0), CosineEDMSchedule()
    u = torch.linspace(0, 1, 11, dtype=torch.float64)
    t = sched.c_noise(dist.icdf(u))  # Stable Audio's noise input is this t
    lo, hi = math.atan(0.3) * 2 / math.pi, math.atan(500.0) * 2 / math.pi
    torch.testing.assert_close(t, lo + (hi - lo) * u, rtol=0, atol=1e-12)
    sigma = dist.sample(20000, generator=torch.Generator().manual_seed(0))
    assert 0.3 <= float(sigma.min()) and float(sigma.max()) <= 500.0
    assert abs(float(sigma.median()) - math.tan(math.pi / 4 * (lo + hi))) < 0.05  # the median t's σ
    with pytest.raises(ValueError, match="sigma_min"):
        CosineTime(2.0, 1.0)


@pytest.fixture(scope="module")
def sa_base(tmp_path_factory) -> Path:
    from test_family_stable_audio import _stable_audio_folder

    return _stable_audio_folder(tmp_path_factory.mktemp("sa") / "sa")


@pytest.fixture(scope="module")
def sounds(tmp_path_factory) -> Path:
    """Four captioned stereo clips at the tiny model's 32 Hz (1.5 s each), words its tokenizer spells."""
    import numpy as np
    import soundfile as sf

    root = tmp_path_factory.mktemp("sounds")
    rows = []
    t = np.arange(48) / 32
    for i, (freq, caption) in enumerate([(3.0, "a hammer hits wood"), (7.0, "rain")] * 2):
        wave = 0.5 * np.sin(2 * np.pi * freq * t + i)
        sf.write(root / f"s{i}.wav", np.stack([wave, -wave], 1), 32)
        rows.append({"path": f"s{i}.wav", "caption": caption})
    return write_metadata(root, rows)


def _audio_args(sounds: Path, out: Path, base: Path, *more: str) -> list[str]:
    return ["train", "audio", "--data", str(sounds), "--out", str(out), "--init", str(base), "--captions",
            "--seconds", "1.5", "--batch", "2", "--device", "cpu", "--workers", "0", "--lr", "1e-3",
            "--warmup", "0", *more]  # fmt: skip


def test_stable_audio_fine_tunes_whole_and_as_a_lora(sa_base, sounds, tmp_path) -> None:
    """train audio --init STABLE_AUDIO_FOLDER: the DiT and its conditioning projection train, the Oobleck
    autoencoder and T5 do not; the result is a Stable Audio folder that loads and generates; a LoRA run
    writes only the adapter, which loads on the base."""
    from multidiff.families import load_family
    from multidiff.lora import load_lora

    run = tmp_path / "run"
    assert cli(_audio_args(sounds, run, sa_base, "--steps", "3")) == 0
    tuned, ref = load_family(run / "pipeline"), load_family(sa_base)
    theirs = dict(ref.denoiser.named_parameters())
    moved = [k for k, v in tuned.denoiser.named_parameters() if not torch.equal(v, theirs[k])]
    assert any(k.startswith("backbone.transformer.") for k in moved)
    assert any(k.startswith("backbone.projection.") for k in moved)
    for a, b in zip(tuned.adapter.parameters(), ref.adapter.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(tuned.text_encoder.parameters(), ref.text_encoder.parameters()):
        assert torch.equal(a, b)
    wave = tuned.generate(1, 1.5, prompt="rain", steps=3, seed=0)
    assert wave.shape == (1, 2, 48) and torch.isfinite(wave).all()

    lora = tmp_path / "lora"
    assert cli(_audio_args(sounds, lora, sa_base, "--steps", "2", "--lora", "2")) == 0
    assert (lora / "lora").is_dir() and not (lora / "pipeline").exists()
    merged = load_lora(load_family(sa_base), lora / "lora")
    changed = {k for k, v in merged.denoiser.named_parameters() if not torch.equal(v, theirs[k])}
    assert changed and all(".attn" in k for k in changed), sorted(changed)[:4]


def test_stable_audio_refuses_clips_longer_than_the_model(sa_base, sounds, tmp_path, capsys) -> None:
    assert cli(_audio_args(sounds, tmp_path / "long", sa_base, "--steps", "1", "--seconds", "3")) == 2
    err = capsys.readouterr().err
    assert err.startswith("multidiff: error:") and "--seconds 3" in err and "at most 2 s" in err
