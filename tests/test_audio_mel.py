"""Log-mel parity with librosa, MelSpec validation, and the MelAdapter contract."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from multidiff.modalities.audio import PRESETS, LogMel, MelAdapter, MelAdapterConfig, MelSpec

_NUMPY_PAD = {"reflect": "reflect", "constant": "constant", "replicate": "edge", "circular": "wrap"}


def rich_signal(sr: int, n: int, seed: int = 0) -> np.ndarray:
    """Harmonic tone + full-band chirp + a little noise, so every mel bin carries energy."""
    import librosa

    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    harm = sum(0.3 / k * np.sin(2 * np.pi * 220.0 * k * t) for k in range(1, 8))
    chirp = 0.2 * librosa.chirp(fmin=60.0, fmax=sr / 2 - 200.0, sr=sr, length=n)
    return harm + chirp + 0.01 * rng.standard_normal(n)


def librosa_logmel(y: np.ndarray, spec: MelSpec) -> np.ndarray:
    import librosa

    if not spec.center and spec.edge_pad:
        y = np.pad(y, spec.edge_pad, mode=_NUMPY_PAD[spec.pad_mode])
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=spec.sample_rate,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
        win_length=spec.win_length,
        window="hann",
        center=spec.center,
        pad_mode=_NUMPY_PAD[spec.pad_mode],
        power=float(spec.power),
        n_mels=spec.n_mels,
        fmin=spec.fmin,
        fmax=spec.fmax,
        htk=spec.mel_scale == "htk",
        norm=spec.norm,
    )
    return np.log(np.maximum(mel, spec.log_floor))


VARIANTS = {
    "hifigan-22k": PRESETS["hifigan-22k"],
    "audioldm-16k": PRESETS["audioldm-16k"],
    "htk-nonorm-power2-constant": dataclasses.replace(
        PRESETS["audioldm-16k"], mel_scale="htk", norm=None, power=2, pad_mode="constant"
    ),
    "htk-slaneynorm-short-window": dataclasses.replace(
        PRESETS["hifigan-22k"], mel_scale="htk", win_length=800
    ),
    "slaney-nonorm-replicate-fmin": dataclasses.replace(
        PRESETS["hifigan-22k"], norm=None, fmin=50.0, fmax=11025.0, pad_mode="replicate"
    ),
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_logmel_matches_librosa(name: str) -> None:
    spec = VARIANTS[name]
    y = rich_signal(spec.sample_rate, 9000 + 37)
    ref = librosa_logmel(y, spec)
    out = LogMel(spec)(torch.tensor(y, dtype=torch.float32)[None, None])  # (1, 1, M, T)
    assert out.shape == (1, 1, spec.n_mels, spec.num_frames(len(y)))
    assert out.shape[-1] == ref.shape[-1]
    # an absolute error of 1e-4 in the log is a relative error of 1e-4 in the mel
    np.testing.assert_allclose(out[0, 0].numpy(), ref, rtol=0, atol=1e-4)
    assert ref.max() > math.log(spec.log_floor) + 5  # the signal is far above the floor


def test_hifigan_frame_count_is_n_over_hop() -> None:
    spec = PRESETS["hifigan-22k"]
    for n in (256 * 10, 256 * 37):
        assert spec.num_frames(n) == n // 256
        assert spec.num_samples(n // 256) == n
    a = PRESETS["audioldm-16k"]
    assert a.num_frames(16000) == 101
    for t in (1, 5, 101):
        assert a.num_frames(a.num_samples(t)) == t


def test_logmel_channels_are_independent() -> None:
    spec = PRESETS["audioldm-16k"]
    left = torch.tensor(rich_signal(spec.sample_rate, 4000, seed=1), dtype=torch.float32)
    right = 0.5 * torch.tensor(rich_signal(spec.sample_rate, 4000, seed=2), dtype=torch.float32)
    lm = LogMel(spec)
    stereo = lm(torch.stack([left, right])[None])  # (1, 2, M, T)
    torch.testing.assert_close(stereo[0, 0], lm(left[None, None])[0, 0])
    torch.testing.assert_close(stereo[0, 1], lm(right[None, None])[0, 0])
    assert not torch.allclose(stereo[0, 0], stereo[0, 1])


def test_logmel_buffers_move_with_module() -> None:
    names = {name for name, _ in LogMel(PRESETS["hifigan-22k"]).named_buffers()}
    assert {"stft.window", "mel.fb"} <= names


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mel_scale", "bark"),
        ("norm", "l2"),
        ("power", 3),
        ("fmax", 20000.0),
        ("win_length", 2048),
        ("log_floor", 0.0),
        ("pad_mode", "mirror"),
        ("hop_length", 0),
        ("n_mels", 1000),
    ],
)
def test_melspec_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(PRESETS["hifigan-22k"], **{field: value})


def test_melspec_center_with_edge_pad_is_rejected() -> None:
    with pytest.raises(ValueError, match="edge_pad"):
        dataclasses.replace(PRESETS["hifigan-22k"], center=True)


def test_melspec_dict_round_trip_and_fingerprint() -> None:
    for spec in PRESETS.values():
        d = json.loads(json.dumps(spec.to_dict()))
        assert MelSpec.from_dict(d) == spec
    assert PRESETS["hifigan-22k"].fingerprint() != PRESETS["audioldm-16k"].fingerprint()
    assert PRESETS["hifigan-22k"].fingerprint() == MelSpec().fingerprint()
    with pytest.raises(ValueError, match="unknown"):
        MelSpec.from_dict({**PRESETS["hifigan-22k"].to_dict(), "bogus": 1})


def test_preset_values() -> None:
    h = PRESETS["hifigan-22k"]
    assert (h.sample_rate, h.n_fft, h.win_length, h.hop_length, h.n_mels) == (22050, 1024, 1024, 256, 80)
    assert (h.fmin, h.fmax, h.mel_scale, h.norm, h.power, h.log_floor) == (
        0.0,
        8000.0,
        "slaney",
        "slaney",
        1,
        1e-5,
    )
    a = PRESETS["audioldm-16k"]
    assert (a.sample_rate, a.n_fft, a.win_length, a.hop_length, a.n_mels, a.fmax) == (
        16000,
        1024,
        1024,
        160,
        64,
        8000.0,
    )


def _waves(spec: MelSpec, channels: int, count: int) -> list[torch.Tensor]:
    return [
        torch.tensor(
            np.stack(
                [
                    rich_signal(spec.sample_rate, 3200, seed=10 * i + c) * (0.3 + 0.2 * i)
                    for c in range(channels)
                ]
            ),
            dtype=torch.float32,
        )[None]
        for i in range(count)
    ]


@pytest.mark.parametrize("channels", [1, 2])
def test_adapter_stats_give_sigma_data(channels: int) -> None:
    spec = PRESETS["audioldm-16k"]
    adapter = MelAdapter(MelAdapterConfig(spec=spec, channels=channels, sigma_data=0.5))
    waves = _waves(spec, channels, 3)
    adapter.fit_stats(waves)
    z = torch.cat([adapter.encode(w) for w in waves])  # (3, C, M, T)
    per_bin = z.transpose(0, 2).reshape(spec.n_mels, -1)  # (M, 3*C*T)
    torch.testing.assert_close(per_bin.mean(1), torch.zeros(spec.n_mels), atol=2e-4, rtol=0)
    torch.testing.assert_close(per_bin.std(1), torch.full((spec.n_mels,), 0.5), atol=2e-4, rtol=0)
    assert z.shape == (3, channels, *adapter.latent_shape(3200 / spec.sample_rate)[1:])
    # streaming over batches equals one pass over the concatenation
    other = MelAdapter(MelAdapterConfig(spec=spec, channels=channels)).fit_stats([torch.cat(waves)])
    torch.testing.assert_close(other.mean, adapter.mean)
    torch.testing.assert_close(other.std, adapter.std)


def test_adapter_serialisation_round_trip(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    spec = PRESETS["audioldm-16k"]
    adapter = MelAdapter(MelAdapterConfig(spec=spec, channels=1, sigma_data=0.7)).fit_stats(
        _waves(spec, 1, 2)
    )
    wave = _waves(spec, 1, 1)[0]
    d = json.loads(json.dumps(adapter.to_dict()))
    rebuilt = MelAdapter.from_dict(d)
    torch.testing.assert_close(rebuilt.encode(wave), adapter.encode(wave), rtol=0, atol=0)
    assert rebuilt.to_dict() == d
    # the statistics are buffers too
    save_file({"mean": adapter.mean, "std": adapter.std}, str(tmp_path / "stats.safetensors"))
    fresh = MelAdapter(MelAdapterConfig(spec=spec, channels=1, sigma_data=0.7))
    assert "stats" not in fresh.to_dict()
    stats = load_file(str(tmp_path / "stats.safetensors"))
    fresh.set_stats(stats["mean"], stats["std"])
    torch.testing.assert_close(fresh.encode(wave), adapter.encode(wave), rtol=0, atol=0)
    assert {"mean", "std", "fitted"} <= set(dict(adapter.named_buffers()))


def test_adapter_encode_decode_shapes() -> None:
    spec = PRESETS["hifigan-22k"]
    adapter = MelAdapter(MelAdapterConfig(spec=spec, channels=2))
    n = 256 * 20
    wave = torch.tensor(np.stack([rich_signal(spec.sample_rate, n), rich_signal(spec.sample_rate, n, 3)]))[
        None
    ]
    z = adapter.encode(wave.float())
    assert z.shape == (1, 2, 80, 20)
    assert adapter.latent_shape(n / spec.sample_rate) == (2, 80, 20)
    out = adapter.decode(z)
    assert out.shape == (1, 2, n)
    assert adapter.decode(z, length=n + 7).shape == (1, 2, n + 7)
    # identity statistics: the latents are sigma_data times the log-mel
    torch.testing.assert_close(z, 0.5 * adapter.logmel(wave.float()))
    with pytest.raises(ValueError, match=r"\[B, 2, N\]"):
        adapter.encode(wave[:, :1].float())


def test_adapter_config_validation() -> None:
    with pytest.raises(ValueError, match="channels"):
        MelAdapterConfig(channels=3)
    with pytest.raises(ValueError, match="sigma_data"):
        MelAdapterConfig(sigma_data=0.0)
