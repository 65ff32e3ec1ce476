"""Tests of recipes/data/make_speech.py (the espeak-ng parts run only where espeak-ng is installed)."""

from __future__ import annotations

import csv
import importlib.util
import shutil
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("make_speech", ROOT / "recipes" / "data" / "make_speech.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_speech"] = module
    spec.loader.exec_module(module)
    return module


ms = _script()
needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install espeak-ng)"
)


def test_plan_draws_distinct_voices_per_word() -> None:
    utts = ms.plan(("zero", "one"), 40, 10, seed=3)
    assert Counter((u.split, u.word) for u in utts) == {
        ("train", "zero"): 40, ("heldout", "zero"): 10, ("train", "one"): 40, ("heldout", "one"): 10,
    }  # fmt: skip
    for word in ("zero", "one"):
        combos = [(u.voice, u.speed, u.pitch) for u in utts if u.word == word]
        assert len(set(combos)) == len(combos)  # no repeat, so held-out clips are not training clips
    assert all(
        ms.SPEEDS[0] <= u.speed <= ms.SPEEDS[1] and ms.PITCHES[0] <= u.pitch <= ms.PITCHES[1] for u in utts
    )
    assert len({u.voice for u in utts}) > 20  # many accent/variant pairs
    assert ms.plan(("zero", "one"), 40, 10, seed=3) == utts
    assert ms.plan(("zero", "one"), 40, 10, seed=4) != utts


def test_plan_speaks_in_the_accents_asked_for() -> None:
    """``--accents``: a set in voices the default set never uses (the fine-tuning benchmark's new speakers)."""
    utts = ms.plan(("zero", "one"), 10, 5, seed=7, accents=("de", "fr-fr"))
    assert {u.voice.split("+")[0] for u in utts} == {"de", "fr-fr"}
    assert not {u.voice.split("+")[0] for u in ms.plan(("zero",), 30, 0, seed=7)} & {"de", "fr-fr"}
    with pytest.raises(ValueError, match="distinct utterances"):  # fewer combinations than asked
        ms.plan(("zero",), 10**6, 0, seed=0, accents=("de",))


def test_trim_silence_keeps_the_sound_and_a_margin() -> None:
    sr = 1000
    x = np.zeros(3000, np.float32)
    x[1000:1500] = np.sin(np.arange(500) * 0.3)
    y = ms.trim_silence(x, sr, margin_s=0.02)
    assert 500 <= y.size <= 540 and np.abs(y).max() == np.abs(x).max()


def test_missing_espeak_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="apt-get install espeak-ng"):
        ms.main(["--out", str(tmp_path / "out"), "--espeak", str(tmp_path / "no-such-espeak-ng")])


@needs_espeak
def test_makes_labelled_splits(tmp_path: Path) -> None:
    import soundfile as sf

    from multidiff.data.audio import AudioFolder

    words = ("zero", "one", "two")
    out = ms.main(["--out", str(tmp_path / "speech"), "--words", ",".join(words), "--per-word", "3",
                   "--heldout-per-word", "2", "--seed", "1", "--jobs", "2"])  # fmt: skip
    for split, k in (("train", 3), ("heldout", 2)):
        files = sorted((out / split).rglob("*.wav"))
        assert len(files) == k * len(words)
        assert Counter(f.parent.name for f in files) == dict.fromkeys(words, k)
        for f in files:
            info = sf.info(str(f))
            assert info.samplerate == 22050 and info.channels == 1
            assert 0.15 < info.duration < 1.5, (f, info.duration)
            x, _ = sf.read(str(f))
            assert np.abs(x).max() == pytest.approx(10 ** (-1 / 20), abs=2e-4)  # peak -1 dBFS (16-bit)
            assert np.abs(x[:50]).max() < 0.3 * np.abs(x).max()  # starts near silence: trimmed, not cut
        with open(out / split / "metadata.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert sorted(r["path"] for r in rows) == sorted(f.relative_to(out / split).as_posix() for f in files)
        assert all(r["label"] == r["path"].split("/")[0] and r["label"] in r["caption"] for r in rows)
        ds = AudioFolder(out / split, sample_rate=22050)
        assert ds.classes == sorted(words) and len(ds) == k * len(words)
        item = ds[0]
        assert ds.classes[item["label"]] == item["path"].split("/")[0]
    # The same arguments give the same files.
    again = ms.main(["--out", str(tmp_path / "again"), "--words", ",".join(words), "--per-word", "3",
                     "--heldout-per-word", "2", "--seed", "1", "--jobs", "1"])  # fmt: skip
    for f in sorted((out / "train").rglob("*.wav")):
        assert f.read_bytes() == (again / "train" / f.relative_to(out / "train")).read_bytes()


@needs_espeak
def test_rate_length_speed_and_pitch_reach_the_audio(tmp_path: Path) -> None:
    out = ms.main(["--out", str(tmp_path / "s"), "--words", "seven", "--per-word", "2", "--heldout-per-word", "0",
                   "--sample-rate", "16000", "--seconds", "0.8"])  # fmt: skip
    import soundfile as sf

    for f in (out / "train" / "seven").glob("*.wav"):
        info = sf.info(str(f))
        assert info.samplerate == 16000 and info.frames == 12800
    assert not (out / "heldout").exists()

    espeak = ms.find_espeak()
    U = ms.Utterance
    slow = ms.synthesize(espeak, U("train", "seven", 0, "en-us+m3", 110, 50), 22050, None)
    fast = ms.synthesize(espeak, U("train", "seven", 0, "en-us+m3", 200, 50), 22050, None)
    assert slow.size > 1.3 * fast.size
    low = ms.synthesize(espeak, U("train", "nine", 0, "en-us+m3", 150, 20), 22050, None)
    high = ms.synthesize(espeak, U("train", "nine", 0, "en-us+m3", 150, 80), 22050, None)

    def f0(x: np.ndarray, sr: int = 22050) -> float:
        """Autocorrelation pitch of the middle half of the clip (the voiced part of "nine")."""
        mid = x[x.size // 4 : 3 * x.size // 4].astype(np.float64)
        spec = np.fft.rfft(mid - mid.mean(), 2 * mid.size)
        ac = np.fft.irfft(np.abs(spec) ** 2)[: mid.size]
        lo, hi = sr // 300, sr // 60  # 60-300 Hz: a male voice, clear of the formants
        return sr / (lo + int(np.argmax(ac[lo:hi])))

    assert f0(high) > 1.2 * f0(low)
