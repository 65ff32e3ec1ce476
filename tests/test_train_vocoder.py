"""Tests of the HiFi-GAN discriminators and losses, and of recipes/train_vocoder.py end to end."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from multidiff.modalities.audio import PRESETS, LogMel, MelSpec
from multidiff.modalities.discriminators import (
    DiscriminatorConfig,
    HiFiGANDiscriminator,
    PeriodDiscriminator,
    apply_weight_norm,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
    multi_resolution_stft_loss,
)
from multidiff.modalities.vocoders import HiFiGAN, fold_weight_norm, load_hifigan
from multidiff.train.checkpoint import latest_checkpoint, list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _recipe():
    spec = importlib.util.spec_from_file_location("train_vocoder", ROOT / "recipes" / "train_vocoder.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_vocoder"] = module
    spec.loader.exec_module(module)
    return module


tv = _recipe()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run faster on one thread than fighting for the shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------- discriminators


def test_period_discriminator_sees_each_phase_separately() -> None:
    """Folding by p and (k, 1) kernels: a change at sample i only moves score column i mod p."""
    torch.manual_seed(0)
    d = PeriodDiscriminator(5, (4, 8, 8)).eval()
    y = torch.randn(1, 1, 600)
    s0, f0 = d(y)
    assert s0.shape[1] % 5 == 0 and all(f.shape[-1] == 5 for f in f0)
    y2 = y.clone()
    y2[0, 0, 302] += 1.0  # phase 302 % 5 = 2
    s1, _ = d(y2)
    changed = (s1 - s0).view(-1, 5).abs().sum(0) > 0  # per column
    assert changed.tolist() == [False, False, True, False, False]
    # A length that is not a multiple of the period is reflect-padded, not an error.
    s_odd, _ = d(torch.randn(2, 1, 601))
    assert s_odd.shape[0] == 2 and s_odd.shape[1] % 5 == 0


def test_hifigan_discriminator_layout() -> None:
    cfg = DiscriminatorConfig()
    d = HiFiGANDiscriminator(cfg)
    scores, feats = d(torch.randn(1, 8192))
    assert len(scores) == len(feats) == 5 + 3
    assert [len(f) for f in feats] == [6] * 5 + [8] * 3  # conv layers + conv_post
    assert [f[-2].shape[1] for f in feats] == [1024] * 8
    # The raw scale is spectrally normalised, the pooled scales and all periods weight-normalised.
    names = [n for n, _ in d.named_parameters()]
    assert any(n.startswith("msd.discriminators.0.convs.0.parametrizations.weight.original") for n in names)
    assert any(n == "msd.discriminators.1.convs.0.parametrizations.weight.original0" for n in names)
    assert any(n == "mpd.discriminators.4.convs.0.parametrizations.weight.original1" for n in names)
    assert [m.period for m in d.mpd.discriminators] == [2, 3, 5, 7, 11]
    with pytest.raises(ValueError, match="groups"):
        DiscriminatorConfig(
            scale_channels=(6, 8), scale_kernels=(3, 3), scale_strides=(1, 1), scale_groups=(1, 4)
        )


def test_spectral_norm_bounds_the_raw_scale() -> None:
    torch.manual_seed(0)
    d = HiFiGANDiscriminator(DiscriminatorConfig.tiny()).train()
    for _ in range(20):  # power iterations run in training forwards
        d(torch.randn(1, 2048))
    conv = d.msd.discriminators[0].convs[1]
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert abs(sigma.item() - 1.0) < 0.05


# ----------------------------------------------------------------------------------- losses


def test_lsgan_and_feature_matching_analytic() -> None:
    ones, zeros = [torch.ones(2, 5)] * 3, [torch.zeros(2, 7)] * 3
    assert discriminator_loss(ones, zeros).item() == 0.0
    assert discriminator_loss(zeros, ones).item() == pytest.approx(6.0)  # (1 + 1) per discriminator
    assert generator_adversarial_loss(ones).item() == 0.0
    assert generator_adversarial_loss([torch.full((4,), 0.5)] * 2).item() == pytest.approx(0.5)
    real = [[torch.zeros(2, 3), torch.zeros(4)], [torch.zeros(5)]]
    fake = [[torch.full((2, 3), 0.5, requires_grad=True), torch.full((4,), -2.0)], [torch.full((5,), 1.0)]]
    loss = feature_matching_loss(real, fake)
    assert loss.item() == pytest.approx(0.5 + 2.0 + 1.0)
    r = [[torch.ones(3, requires_grad=True)]]
    feature_matching_loss(r, [[torch.zeros(3, requires_grad=True)]]).backward()
    assert r[0][0].grad is None  # real feature maps are targets


def test_multi_resolution_stft_loss_of_a_scaled_signal() -> None:
    """For y_hat = a y: spectral convergence |1 - a| plus log-magnitude |log a| at every resolution."""
    torch.manual_seed(0)
    y = torch.randn(2, 8192)
    assert multi_resolution_stft_loss(y, y).item() == pytest.approx(0.0, abs=1e-6)
    for a in (0.5, 2.0):
        got = multi_resolution_stft_loss(a * y, y).item()
        assert got == pytest.approx(abs(1 - a) + abs(math.log(a)), rel=1e-4)
    with pytest.raises(ValueError, match="one shape"):
        multi_resolution_stft_loss(y[:, :100], y)


def test_weight_norm_state_folds_back_for_load_hifigan() -> None:
    spec = PRESETS["hifigan-22k"]
    torch.manual_seed(0)
    g = apply_weight_norm(HiFiGAN(tv.generator_config("tiny", spec), spec)).eval()
    sd = g.state_dict()
    assert any(k.endswith("parametrizations.weight.original0") for k in sd)
    plain = HiFiGAN(tv.generator_config("tiny", spec), spec).eval()
    plain.load_official_state_dict(sd)
    mel = torch.randn(1, 80, 6)
    torch.testing.assert_close(plain(mel), g(mel), rtol=1e-5, atol=1e-6)
    assert set(fold_weight_norm(sd)) == set(plain.state_dict())


# ----------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("hop", [256, 160, 120, 300, 441])
def test_upsample_plan(hop: int) -> None:
    rates, kernels = tv.upsample_plan(hop)
    assert math.prod(rates) == hop
    assert all(k >= u and (k - u) % 2 == 0 for u, k in zip(rates, kernels))
    if hop == 256:
        assert (rates, kernels) == ((8, 8, 2, 2), (16, 16, 4, 4))


def test_upsample_plan_refuses_large_primes() -> None:
    with pytest.raises(ValueError, match="prime factor"):
        tv.upsample_plan(11 * 16)


@pytest.mark.parametrize("model", tv.MODELS)
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_generator_configs_fit_presets(model: str, preset: str) -> None:
    spec = PRESETS[preset]
    cfg = tv.generator_config(model, spec)
    assert cfg.hop_length == spec.hop_length and cfg.n_mels == spec.n_mels
    if model == "v1" and preset == "hifigan-22k":
        assert cfg.upsample_initial_channel == 512 and cfg.resblock_kernel_sizes == (3, 7, 11)


# ----------------------------------------------------------------------------------- recipe


def _tones(folder: Path, sr: int = 22050, seconds: float = 0.4) -> Path:
    """Harmonic tones (f0 and four overtones with 1/k amplitudes) as 16-bit wav files."""
    import soundfile as sf

    folder.mkdir(parents=True)
    t = np.arange(int(seconds * sr)) / sr
    for i, f0 in enumerate((110.0, 165.0, 220.0, 330.0)):
        x = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 6))
        sf.write(str(folder / f"tone{i}.wav"), x.astype(np.float32), sr)
    return folder


def _run(data: Path, out: Path, steps: int, *extra: str) -> Path:
    argv = ["--data", str(data), "--out", str(out), "--tiny", "--steps", str(steps), "--batch", "2",
            "--segment", "2048", "--workers", "0", "--log-every", "1", "--save-every", "2", "--no-progress",
            *extra]  # fmt: skip
    return tv.main(argv)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_recipe_trains_saves_loads_and_resumes_exactly(tmp_path: Path) -> None:
    data = _tones(tmp_path / "data")
    run = _run(data, tmp_path / "run", 2)
    log = _log(run)
    assert [r["step"] for r in log] == [1, 2]
    assert all(math.isfinite(r[k]) for r in log for k in ("loss_d", "loss_g", "mel_l1", "fm", "adv"))
    # Loss scale: the mel L1 term dominates (x45) and an untrained tiny generator is far off.
    assert log[0]["loss_g"] > 45 * 0.5 * log[0]["mel_l1"]

    # The result loads the way users load vocoders, with the spec it was trained for.
    vocoder = load_hifigan(run)
    config = json.loads((run / "config.json").read_text())
    assert vocoder.spec == PRESETS["hifigan-22k"] == MelSpec.from_dict(config["multidiff"]["spec"])
    assert config["multidiff"]["step"] == 2
    assert vocoder.config == tv.generator_config("tiny", vocoder.spec)
    wave = torch.from_numpy(np.asarray(__import__("soundfile").read(str(data / "tone2.wav"))[0], np.float32))
    mel = LogMel(vocoder.spec)(wave[None, :2048])  # (1, M, T)
    y = vocoder(mel)
    assert y.shape == (1, 2048) and torch.isfinite(y).all()

    # The run folder is the one format of every trainer: numbered checkpoints, a latest pointer, the log.
    ckpt = latest_checkpoint(run)
    assert ckpt is not None and ckpt.path.name == "ckpt-00000002" and ckpt.step == 2
    assert (run / "latest").read_text().strip() == "ckpt-00000002"
    assert {"model", "optimizer-g", "optimizer-d", "rng"} <= {p.stem for p in ckpt.path.glob("*.safetensors")}
    assert ckpt.state["config"] == tv.VocoderTrainSettings.from_dict(ckpt.state["config"]).to_dict()
    assert not (run / "lock").exists() and not (run / "checkpoints").exists()
    assert load_hifigan(ckpt.path / "vocoder").config == vocoder.config  # each checkpoint's vocoder loads

    # Rerunning the same command with more steps resumes at step 2 ...
    _run(data, run, 4)
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4]
    assert [c.path.name for c in list_checkpoints(run)] == ["ckpt-00000002", "ckpt-00000004"]
    # ... and lands on the same weights and optimiser states as an uninterrupted run (bit for bit on the CPU).
    straight = _run(data, tmp_path / "straight", 4)
    a, b = _weights(run / "generator.safetensors"), _weights(straight / "generator.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("model", "optimizer-g", "optimizer-d"):
        ta = _weights(run / "ckpt-00000004" / f"{name}.safetensors")
        tb = _weights(straight / "ckpt-00000004" / f"{name}.safetensors")
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    model = _weights(run / "ckpt-00000004" / "model.safetensors")
    assert {k.split(".")[0] for k in model} == {"generator", "discriminator"}
    # The weights did move during training.
    first = _weights(run / "ckpt-00000002" / "vocoder" / "generator.safetensors")
    assert any(not torch.equal(first[k], a[k]) for k in a)

    # Asking a finished run for fewer steps trains nothing; asking it with other settings is refused.
    _run(data, run, 3)
    assert len(_log(run)) == 4
    with pytest.raises(ValueError, match="segment"):
        _run(data, run, 6, "--segment", "4096")


def test_recipe_fine_tunes_from_init(tmp_path: Path) -> None:
    data = _tones(tmp_path / "data")
    base = _run(data, tmp_path / "base", 2, "--seed", "1")
    # A vanishing learning rate leaves the initial weights in place: the fine-tune starts from them.
    tuned = _run(data, tmp_path / "tuned", 1, "--init", str(base), "--lr", "1e-30", "--save-every", "1")
    mel = torch.randn(1, 80, 8)
    torch.testing.assert_close(load_hifigan(tuned)(mel), load_hifigan(base)(mel), rtol=1e-5, atol=1e-6)
    fresh = _run(data, tmp_path / "fresh", 1, "--seed", "1", "--lr", "1e-30", "--save-every", "1")
    assert (load_hifigan(fresh)(mel) - load_hifigan(base)(mel)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="audioldm-16k"):
        _run(data, tmp_path / "bad", 1, "--init", str(base), "--preset", "audioldm-16k")


def test_recipe_on_a_centred_16k_spec(tmp_path: Path) -> None:
    """audioldm-16k (hop 160, 64 mels, centred frames): T = 1 + N / hop, so the output is trimmed to N."""
    data = _tones(tmp_path / "data", sr=16000)
    run = _run(
        data, tmp_path / "run", 1, "--preset", "audioldm-16k", "--segment", "1600", "--save-every", "1"
    )
    config = json.loads((run / "config.json").read_text())
    spec = MelSpec.from_dict(config["multidiff"]["spec"])
    assert spec == PRESETS["audioldm-16k"]
    vocoder = load_hifigan(run)  # the exact spec comes from config.json's multidiff block
    assert vocoder.spec == spec
    assert math.prod(vocoder.config.upsample_rates) == 160 and vocoder.config.n_mels == 64
    mel = LogMel(spec)(torch.zeros(1, 1600).uniform_(-0.1, 0.1))  # (1, 64, 11)
    assert mel.shape[-1] == 11 and vocoder(mel).shape == (1, 11 * 160)
    assert math.isfinite(_log(run)[0]["mel_l1"])


def test_segments_depend_on_step_only(tmp_path: Path) -> None:
    """Loader workers and the resume point do not change which segments a step sees."""
    from torch.utils.data import DataLoader

    from multidiff.data.audio import AudioFolder

    folder = AudioFolder(
        _tones(tmp_path / "data"), sample_rate=22050, clip_seconds=1024 / 22050, labels="none"
    )
    stream = tv.SegmentStream(folder, batch=2, seed=5)

    def batches(start: int, workers: int) -> list[torch.Tensor]:
        loader = DataLoader(stream, batch_size=2, sampler=range(2 * start, 2 * 6), num_workers=workers)
        return list(loader)

    full = batches(0, 0)
    assert len(full) == 6 and full[0].shape == (2, 1024)
    assert all(torch.equal(a, b) for a, b in zip(batches(3, 2), full[3:]))
    assert not torch.equal(full[0], full[1])


def test_old_run_folder_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """A run of the former format (RUN/checkpoints/step_NNNNNNNN with train_state/) is not resumed: one line
    names its newest checkpoint and says to use a new --out, or --init from that checkpoint's weights, which
    works as said."""
    import shutil

    data = _tones(tmp_path / "data")
    base = _run(data, tmp_path / "base", 1, "--save-every", "1")
    old = tmp_path / "old"
    for step in (2, 4):  # the former layout: generator and config.json in each step folder
        folder = old / "checkpoints" / f"step_{step:08d}"
        (folder / "train_state").mkdir(parents=True)
        (folder / "train_state" / "state.json").write_text(json.dumps({"format": 1, "step": step}))
        for name in ("generator.safetensors", "config.json"):
            shutil.copy(base / name, folder / name)
            shutil.copy(base / name, old / name)
    with pytest.raises(ValueError) as err:
        _run(data, old, 6)
    message = str(err.value)
    newest = old / "checkpoints" / "step_00000004"
    assert "\n" not in message and "older multidiff" in message and "new --out" in message
    assert f"--init {newest}" in message
    assert not (old / "lock").exists() and not list(old.glob("ckpt-*"))  # nothing written
    # What the message says to do works: a new run starting from the old weights.
    tuned = _run(data, tmp_path / "tuned", 1, "--init", str(newest), "--lr", "1e-30", "--save-every", "1")
    mel = torch.randn(1, 80, 8)
    torch.testing.assert_close(load_hifigan(tuned)(mel), load_hifigan(base)(mel), rtol=1e-5, atol=1e-6)


def test_data_that_cannot_be_read_leaves_no_run_behind(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match="has no usable audio file"):
        _run(empty, tmp_path / "run", 2)
    assert not (tmp_path / "run" / "run.json").exists()  # marked only once the data has been read
