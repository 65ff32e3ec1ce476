"""read_audio / write_audio: round trips per format, resampling, atomic writes, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from multidiff.io import AudioFileError, probe_audio, read_audio, write_audio

SR = 22050


def tone(freq: float, n: int, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def stereo(n: int = 4410) -> torch.Tensor:
    return torch.stack([tone(440.0, n), tone(660.0, n, amp=0.3)])  # (2, N)


@pytest.mark.parametrize(("ext", "atol"), [(".wav", 1.0 / 32768 + 1e-7), (".flac", 1.0 / 32768 + 1e-7)])
def test_lossless_round_trip(tmp_path, ext: str, atol: float) -> None:
    wave = stereo()
    path = write_audio(tmp_path / f"x{ext}", wave, SR)
    back, sr = read_audio(path)
    assert sr == SR and back.dtype == torch.float32 and back.shape == wave.shape
    torch.testing.assert_close(back, wave, rtol=0, atol=atol)
    info = probe_audio(path)
    assert (info.sample_rate, info.frames, info.channels, info.subtype) == (SR, 4410, 2, "PCM_16")


def test_float_wav_is_exact(tmp_path) -> None:
    wave = stereo() * 1.5  # FLOAT keeps values beyond full scale
    back, _ = read_audio(write_audio(tmp_path / "f.wav", wave, SR, subtype="FLOAT"))
    torch.testing.assert_close(back, wave, rtol=0, atol=0)


def test_ogg_round_trip(tmp_path) -> None:
    wave = stereo(SR // 2)
    back, sr = read_audio(write_audio(tmp_path / "x.ogg", wave, SR))
    assert sr == SR and back.shape == wave.shape
    for c in range(2):  # lossy, but the same tone in the same channel
        corr = torch.dot(back[c], wave[c]) / (back[c].norm() * wave[c].norm())
        assert corr > 0.99
    cross = torch.dot(back[0], wave[1]) / (back[0].norm() * wave[1].norm())
    assert abs(float(cross)) < 0.05


def test_mono_and_1d_input(tmp_path) -> None:
    wave = stereo()
    path = write_audio(tmp_path / "s.wav", wave, SR, subtype="FLOAT")
    mono, _ = read_audio(path, mono=True)
    torch.testing.assert_close(mono, wave.mean(0, keepdim=True))
    one, _ = read_audio(write_audio(tmp_path / "m.wav", tone(300.0, 1000), SR))
    assert one.shape == (1, 1000)


def test_resampling_keeps_frequency(tmp_path) -> None:
    n, f = 44100 // 2, 1000.0
    path = write_audio(tmp_path / "hi.wav", tone(f, n, sr=44100), 44100, subtype="FLOAT")
    wave, sr = read_audio(path, sample_rate=16000)
    assert sr == 16000 and wave.shape == (1, 8000)
    spectrum = torch.fft.rfft(wave[0]).abs()
    peak_hz = float(spectrum.argmax()) * sr / wave.shape[-1]
    assert abs(peak_hz - f) <= 2.0
    middle = wave[0, 1000:-1000]
    torch.testing.assert_close(middle, tone(f, 8000, sr=16000)[1000:-1000], rtol=0, atol=2e-3)


def test_partial_read(tmp_path) -> None:
    ramp = torch.linspace(-0.9, 0.9, 1000)
    path = write_audio(tmp_path / "r.wav", ramp, SR, subtype="FLOAT")
    part, _ = read_audio(path, start=100, frames=50)
    torch.testing.assert_close(part[0], ramp[100:150], rtol=0, atol=0)


def test_clipping_for_pcm(tmp_path) -> None:
    back, _ = read_audio(write_audio(tmp_path / "loud.wav", 3 * tone(100.0, 2000), SR))
    assert float(back.abs().max()) <= 1.0 and float(back.abs().max()) > 0.99


def test_write_is_atomic(tmp_path, monkeypatch) -> None:
    import soundfile as sf

    path = write_audio(tmp_path / "keep.wav", tone(440.0, 1000), SR)
    before = path.read_bytes()
    real_write = sf.write

    def failing_write(file, data, *args, **kwargs):  # write part of the file, then die
        real_write(file, data[:10], *args, **kwargs)
        raise RuntimeError("disk full")

    monkeypatch.setattr(sf, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        write_audio(path, tone(880.0, 5000), SR)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]  # no temporary file left behind
    monkeypatch.setattr(sf, "write", real_write)
    write_audio(path, tone(880.0, 5000), SR)  # overwriting works and leaves one file
    assert read_audio(path)[0].shape == (1, 5000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"]


def test_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "text.wav").write_text("this is not audio\n" * 20)
    with pytest.raises(AudioFileError, match="text.wav"):
        read_audio(tmp_path / "text.wav")
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.raises(AudioFileError, match=r"empty.flac: empty file"):
        probe_audio(tmp_path / "empty.flac")
    good = write_audio(tmp_path / "good.wav", tone(440.0, 4000), SR)
    (tmp_path / "cut.wav").write_bytes(good.read_bytes()[:30])  # cut inside the header
    with pytest.raises(ValueError, match="cut.wav"):
        read_audio(tmp_path / "cut.wav")
    with pytest.raises(ValueError, match=r"clip.mp4.*unsupported extension"):
        write_audio(tmp_path / "clip.mp4", tone(440.0, 100), SR)
    with pytest.raises(ValueError, match="bad.wav"):
        write_audio(tmp_path / "bad.wav", tone(440.0, 100), SR, subtype="VORBIS")
    with pytest.raises(ValueError, match="NaN"):
        write_audio(tmp_path / "nan.wav", torch.tensor([0.0, float("nan")]), SR)
    with pytest.raises(FileNotFoundError, match="no_dir"):
        write_audio(tmp_path / "no_dir" / "x.wav", tone(440.0, 100), SR)


def test_numpy_input(tmp_path) -> None:
    arr = np.stack([np.linspace(-0.5, 0.5, 300), np.zeros(300)]).astype(np.float32)
    back, _ = read_audio(write_audio(tmp_path / "n.flac", arr, 8000))
    np.testing.assert_allclose(back.numpy(), arr, atol=1.0 / 32768 + 1e-7)
