"""AudioFolder: skipping broken files, labels, crops and masks, resampling, loudness, the mel cache."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch

from multidiff.data.audio import AudioFolder, AudioFolderConfig, SkippedFileWarning
from multidiff.io import read_audio, write_audio
from multidiff.modalities.audio import PRESETS, LogMel

SR = 16000


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(round(seconds * sr)), dtype=torch.float64) / sr
    return (amp * torch.sin(2 * math.pi * freq * t)).float()


def ramp(n: int) -> torch.Tensor:
    """A signal whose every sample says where it came from."""
    return torch.linspace(-0.9, 0.9, n)


def make_folder(root: Path) -> dict[str, str]:
    """Four good files in two label folders and one broken file of each kind; returns broken name -> reason."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    write_audio(root / "cats" / "a.wav", tone(300.0, 0.5), SR)
    write_audio(root / "cats" / "b.flac", tone(400.0, 0.3), SR)
    write_audio(root / "dogs" / "c.ogg", tone(500.0, 0.6), SR)
    write_audio(
        root / "dogs" / "d.wav", torch.stack([tone(600.0, 0.4, 44100), tone(700.0, 0.4, 44100)]), 44100
    )
    (root / "dogs" / "notes.txt").write_text("not considered: wrong extension")
    # the broken ones
    (root / "cats" / "empty.wav").write_bytes(b"")
    full = (root / "cats" / "a.wav").read_bytes()
    (root / "cats" / "header.wav").write_bytes(full[:30])  # cut inside the header
    (root / "cats" / "cut_data.wav").write_bytes(full[: len(full) // 3])  # header announces more data
    (root / "dogs" / "text.wav").write_text("hello, I am a text file\n" * 40)
    write_audio(root / "dogs" / "silent.wav", torch.zeros(8000), SR)
    write_audio(root / "dogs" / "short.flac", tone(440.0, 0.02), SR)
    return {
        "empty.wav": "empty file",
        "header.wav": "not a readable audio file",
        "cut_data.wav": "truncated",
        "text.wav": "not a readable audio file",
        "silent.wav": "silent",
        "short.flac": "too short",
    }


def test_broken_files_are_skipped_with_warnings(tmp_path) -> None:
    broken = make_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5)
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert len(ds) == 4
    assert sorted(Path(p).name for p, _ in ds.skipped) == sorted(broken)
    for name, reason in broken.items():
        (got,) = [r for p, r in ds.skipped if Path(p).name == name]
        assert reason in got, (name, got)
        assert any(name in m and reason in m for m in messages), name
    assert any("skipped 6 of 10 files" in m for m in messages)
    assert sorted(e.rel for e in ds.entries) == ["cats/a.wav", "cats/b.flac", "dogs/c.ogg", "dogs/d.wav"]


def test_hidden_files_are_not_data_unless_metadata_lists_them(tmp_path) -> None:
    (tmp_path / "cats").mkdir()
    write_audio(tmp_path / "cats" / "a.wav", tone(300.0, 0.5), SR)
    leftover = ".tmp-b.3e656da6e933.wav"  # what a write killed mid-way leaves
    write_audio(tmp_path / "cats" / leftover, tone(400.0, 0.5), SR)
    (tmp_path / "cats" / "._a.wav").write_bytes(b"\x00\x05\x16\x07" + bytes(200))  # macOS metadata, not audio
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_audio(tmp_path / ".ipynb_checkpoints" / "c.wav", tone(500.0, 0.5), SR)
    with pytest.warns(SkippedFileWarning):
        ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5)
    assert [e.rel for e in ds.entries] == ["cats/a.wav"] and ds.classes == ["cats"]
    hidden = sorted(Path(p).name for p, reason in ds.skipped if reason.startswith("hidden"))
    assert hidden == sorted([leftover, "._a.wav", "c.wav"]) and len(ds.skipped) == 3
    # a hidden file that metadata.csv lists is data
    (tmp_path / "metadata.csv").write_text(f"path,label\ncats/a.wav,cat\ncats/{leftover},cat\n")
    with pytest.warns(SkippedFileWarning):
        ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5)
    assert sorted(e.rel for e in ds.entries) == sorted(["cats/a.wav", f"cats/{leftover}"])
    assert sorted(Path(p).name for p, _ in ds.skipped) == ["._a.wav", "c.wav"]


def test_csv_labels_are_names_but_a_json_list_is_refused(tmp_path) -> None:
    for k in range(3):
        write_audio(tmp_path / f"{k}.wav", tone(300.0 + 100 * k, 0.3), SR)
    (tmp_path / "metadata.csv").write_text('path,label\n0.wav,[laughter]\n1.wav,true\n2.wav,{noise\n')
    ds = AudioFolder(tmp_path, sample_rate=SR)
    assert ds.classes == ["[laughter]", "true", "{noise"]  # names with brackets, a word
    (tmp_path / "metadata.csv").write_text('path,label\n0.wav,"[1, 2]"\n1.wav,a\n2.wav,b\n')
    with pytest.raises(ValueError, match=r"metadata.csv, line 2: the label '\[1, 2\]' is not a name or number"):
        AudioFolder(tmp_path, sample_rate=SR)


def test_labels_from_subfolders(tmp_path) -> None:
    make_folder(tmp_path)
    with pytest.warns(SkippedFileWarning):
        ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5)
    assert ds.classes == ["cats", "dogs"]
    labels = {ds[i]["path"]: ds[i]["label"] for i in range(len(ds))}
    assert labels == {"cats/a.wav": 0, "cats/b.flac": 0, "dogs/c.ogg": 1, "dogs/d.wav": 1}


def test_labels_and_captions_from_metadata(tmp_path) -> None:
    write_audio(tmp_path / "x.wav", tone(300.0, 0.3), SR)
    (tmp_path / "sub").mkdir()
    write_audio(tmp_path / "sub" / "y.wav", tone(400.0, 0.3), SR)
    write_audio(tmp_path / "unlisted.wav", tone(500.0, 0.3), SR)
    (tmp_path / "metadata.csv").write_text(
        'path,label,caption\nx.wav,bird,a bird sings\nsub/y.wav,alarm,"an alarm, loud"\ngone.wav,bird,missing\n'
    )
    with pytest.warns(UserWarning) as record:
        ds = AudioFolder(tmp_path, sample_rate=SR)
    assert any("gone.wav" in str(w.message) for w in record)
    assert len(ds) == 3 and ds.classes == ["alarm", "bird"]
    items = {ds[i]["path"]: ds[i] for i in range(3)}
    assert "label" not in items["unlisted.wav"] and "caption" not in items["unlisted.wav"]
    assert items["x.wav"]["label"] == 1 and items["x.wav"]["caption"] == "a bird sings"
    assert items["sub/y.wav"]["label"] == 0 and items["sub/y.wav"]["caption"] == "an alarm, loud"
    assert ds.skipped == [(str(tmp_path / "gone.wav"), "listed in metadata.csv but not found")]
    # a file present but not listed is used without a label or caption, and said so
    assert any("1 file(s)" in str(w.message) and "unlisted.wav" in str(w.message) for w in record)
    (tmp_path / "metadata.csv").write_text("file,label\nx.wav,bird\n")
    with pytest.raises(ValueError, match=r"metadata.csv needs a 'path' \(or 'file_name'\) column"):
        AudioFolder(tmp_path, sample_rate=SR)


def test_flat_folder_has_no_labels(tmp_path) -> None:
    write_audio(tmp_path / "x.wav", tone(300.0, 0.3), SR)
    ds = AudioFolder(tmp_path, sample_rate=SR)
    assert ds.classes == [] and "label" not in ds[0]


def test_empty_or_unusable_folder_raises(tmp_path) -> None:
    with pytest.raises(ValueError, match=str(tmp_path)):
        AudioFolder(tmp_path, sample_rate=SR)
    (tmp_path / "bad.wav").write_text("nope")
    with pytest.warns(SkippedFileWarning), pytest.raises(ValueError, match="no usable audio file"):
        AudioFolder(tmp_path, sample_rate=SR)
    with pytest.raises(ValueError, match="does not exist"):
        AudioFolder(tmp_path / "nowhere", sample_rate=SR)


def test_crop_and_pad_with_mask(tmp_path) -> None:
    write_audio(tmp_path / "long.wav", ramp(SR), SR, subtype="FLOAT")  # 1 s
    write_audio(tmp_path / "short.wav", ramp(int(0.3 * SR)), SR, subtype="FLOAT")  # 0.3 s
    ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5, loudness=None, seed=7)
    clip = SR // 2
    long_i = [e.rel for e in ds.entries].index("long.wav")
    short = ds[1 - long_i]
    assert short["wave"].shape == (1, clip) and short["mask"].shape == (clip,)
    n_short = int(0.3 * SR)
    assert short["mask"][:n_short].all() and not short["mask"][n_short:].any()
    torch.testing.assert_close(short["wave"][0, :n_short], ramp(n_short))
    assert not short["wave"][0, n_short:].any()
    starts = set()
    for epoch in range(6):
        item = ds.get(long_i, epoch)
        assert item["mask"].all()
        start = ds.crop_start(long_i, epoch)
        torch.testing.assert_close(item["wave"][0], ramp(SR)[start : start + clip])
        torch.testing.assert_close(ds.get(long_i, epoch)["wave"], item["wave"], rtol=0, atol=0)
        starts.add(start)
    assert len(starts) > 1  # epochs draw different crops...
    again = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5, loudness=None, seed=7)
    assert [again.crop_start(long_i, e) for e in range(6)] == [ds.crop_start(long_i, e) for e in range(6)]
    ds.set_epoch(4)
    torch.testing.assert_close(ds[long_i]["wave"], ds.get(long_i, 4)["wave"])  # ...reproducibly
    fixed = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.5, loudness=None, random_crop=False)
    torch.testing.assert_close(fixed.get(long_i, 3)["wave"][0], ramp(SR)[:clip])


def test_resampled_crop_matches_whole_file(tmp_path) -> None:
    sig = torch.stack([tone(523.0, 1.0, 44100, 0.4), tone(300.0, 1.0, 44100, 0.2)])
    write_audio(tmp_path / "s.wav", sig, 44100, subtype="FLOAT")
    ds = AudioFolder(tmp_path, sample_rate=SR, clip_seconds=0.25, loudness=None, channels=2)
    whole, _ = read_audio(tmp_path / "s.wav", sample_rate=SR)
    clip = SR // 4
    for epoch in range(3):
        start = ds.crop_start(0, epoch)
        assert start % 160 == 0  # the resampling period: 44100 / 16000 = 441 / 160
        item = ds.get(0, epoch)
        assert item["wave"].shape == (2, clip)
        # the crop reads a margin, so the resampling filter sees the same context as for the whole file
        torch.testing.assert_close(item["wave"], whole[:, start : start + clip], rtol=0, atol=1e-6)


def test_channel_policy(tmp_path) -> None:
    left, right = tone(300.0, 0.3), tone(500.0, 0.3, amp=0.2)
    write_audio(tmp_path / "st.wav", torch.stack([left, right]), SR, subtype="FLOAT")
    (tmp_path / "m").mkdir()
    write_audio(tmp_path / "m" / "mono.wav", left, SR, subtype="FLOAT")
    mono_ds = AudioFolder(tmp_path, sample_rate=SR, loudness=None, labels="none")
    items = {mono_ds[i]["path"]: mono_ds[i]["wave"] for i in range(2)}
    torch.testing.assert_close(items["st.wav"], ((left + right) / 2)[None])
    st_ds = AudioFolder(tmp_path, sample_rate=SR, loudness=None, labels="none", channels=2)
    items = {st_ds[i]["path"]: st_ds[i]["wave"] for i in range(2)}
    torch.testing.assert_close(items["m/mono.wav"], torch.stack([left, left]))
    torch.testing.assert_close(items["st.wav"], torch.stack([left, right]))


def test_loudness_normalisation(tmp_path) -> None:
    write_audio(tmp_path / "q.wav", tone(300.0, 0.5, amp=0.05), SR, subtype="FLOAT")
    rms_ds = AudioFolder(tmp_path, sample_rate=SR, loudness="rms", target_db=-20.0)
    wave = rms_ds[0]["wave"]
    assert float(wave.square().mean().sqrt()) == pytest.approx(0.1, rel=1e-3)
    peak_ds = AudioFolder(tmp_path, sample_rate=SR, loudness="peak", target_db=-1.0)
    assert float(peak_ds[0]["wave"].abs().max()) == pytest.approx(10 ** (-1 / 20), rel=1e-4)
    # an RMS target that would clip is capped at full scale
    loud = AudioFolder(tmp_path, sample_rate=SR, loudness="rms", target_db=-1.0)
    assert float(loud[0]["wave"].abs().max()) == pytest.approx(1.0, rel=1e-4)
    # without the content scan, loudness is measured on the crop itself
    lazy = AudioFolder(tmp_path, sample_rate=SR, loudness="rms", target_db=-20.0, scan_content=False)
    assert float(lazy[0]["wave"].square().mean().sqrt()) == pytest.approx(0.1, rel=1e-3)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="channels"):
        AudioFolderConfig(channels=3)
    with pytest.raises(ValueError, match="loudness"):
        AudioFolderConfig(loudness="lufs")
    with pytest.raises(ValueError, match="labels"):
        AudioFolderConfig(labels="files")


def test_mel_cache(tmp_path) -> None:
    spec = PRESETS["audioldm-16k"]
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    sig = tone(300.0, 0.9) + tone(1200.0, 0.9, amp=0.2)
    write_audio(data / "a.wav", sig, SR, subtype="FLOAT")
    write_audio(data / "b.wav", tone(700.0, 0.2), SR, subtype="FLOAT")
    ds = AudioFolder(data, sample_rate=SR, clip_seconds=0.4, loudness=None, spec=spec, cache_dir=cache)
    i = [e.rel for e in ds.entries].index("a.wav")
    item = ds.get(i, 2)
    start = ds.crop_start(i, 2)
    assert start % spec.hop_length == 0
    t_clip = spec.num_frames(int(0.4 * SR))
    full = LogMel(spec)(sig[None])  # (1, M, T_full)
    k = start // spec.hop_length
    assert item["mel"].shape == (1, spec.n_mels, t_clip) and item["mel_mask"].all()
    torch.testing.assert_close(item["mel"], full[..., k : k + t_clip], rtol=0, atol=1e-5)
    torch.testing.assert_close(item["wave"][0], sig[start : start + int(0.4 * SR)])
    cached = ds.cache_path(i)
    assert cached.is_file() and cached.parent.name == spec.fingerprint()
    # a second dataset reads the cache instead of decoding (return_wave=False)
    again = AudioFolder(
        data, sample_rate=SR, clip_seconds=0.4, loudness=None, spec=spec, cache_dir=cache, return_wave=False
    )
    item2 = again.get(i, 2)
    assert "wave" not in item2
    torch.testing.assert_close(item2["mel"], item["mel"], rtol=0, atol=0)
    # the short file is padded with the log floor and masked
    short = ds[1 - i]
    n_frames = spec.num_frames(int(0.2 * SR))
    assert short["mel_mask"][:n_frames].all() and not short["mel_mask"][n_frames:].any()
    assert torch.all(short["mel"][..., n_frames:] == math.log(spec.log_floor))
    with pytest.raises(ValueError, match="sample_rate"):
        AudioFolder(data, sample_rate=22050, spec=spec, cache_dir=cache)


METADATA_FAULTS = {
    "an unclosed quote": (
        'path,label\n"x.wav,bird\ny.wav,cat\nz.wav,cat\n',
        "line 2: unexpected end of data",
    ),
    "a quote closed rows later": (
        'path,label\n"x.wav,bird\ny.wav",cat\nz.wav,cat\n',
        "line 2: a quoted field runs",
    ),
    "a row with more fields": ("path,label\nx.wav,bird,extra\n", "line 2: 3 fields, the header has 2"),
    "undecodable bytes": (b"path,label\nx.wav,b\xffird\n", "line 2: not UTF-8"),
    "a path outside the folder": (
        "path,label\n../elsewhere.wav,bird\n",
        "line 2: '../elsewhere.wav' is outside",
    ),
    "an absolute path outside": ("path,label\n/etc/passwd,bird\n", "outside the data folder"),
    "a file listed twice": (
        "path,label\nx.wav,bird\nx.wav,cat\n",
        "line 3: 'x.wav' is listed again (first on line 2)",
    ),
    "a column named twice": ("path,label,label\nx.wav,bird,cat\n", "line 1: the header names 'label' twice"),
    "labels that differ in a space": ("path,label\nx.wav,low\ny.wav, low\n", "' low' and 'low' differ only"),
    "labels that differ in case": ("path,label\nx.wav,High\ny.wav,high\n", "'High' and 'high' differ only"),
    "a JSON list as a label": (('{"path": "x.wav", "label": ["a"]}\n', "jsonl"), "line 1: the label ['a']"),
    "a JSON true as a label": (('{"path": "x.wav", "label": true}\n', "jsonl"), "line 1: the label True"),
    "a number as a caption": (('{"path": "x.wav", "caption": 3}\n', "jsonl"), "line 1: the caption 3 is not text"),
}


@pytest.mark.parametrize("case", sorted(METADATA_FAULTS))
def test_malformed_metadata_is_refused_naming_the_file_and_line(tmp_path, case) -> None:
    write_audio(tmp_path / "x.wav", tone(300.0, 0.3), SR)
    write_audio(tmp_path / "y.wav", tone(400.0, 0.3), SR)
    text, message = METADATA_FAULTS[case]
    text, suffix = text if isinstance(text, tuple) else (text, "csv")
    path = tmp_path / f"metadata.{suffix}"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=f"metadata.{suffix}") as err:
        AudioFolder(tmp_path, sample_rate=SR)
    assert message in str(err.value)


def test_metadata_with_a_bom_file_name_column_or_jsonl(tmp_path) -> None:
    """A spreadsheet's UTF-8 BOM, the ``file_name`` column of the common folder convention and
    ``metadata.jsonl`` all read the same labels and captions."""
    write_audio(tmp_path / "x.wav", tone(300.0, 0.3), SR)
    write_audio(tmp_path / "y.wav", tone(600.0, 0.3), SR)
    forms = {
        "metadata.csv": "\ufeffpath,label,caption\nx.wav,low,a low tone\ny.wav,high,a high tone\n",
        "metadata.jsonl": '{"file_name": "x.wav", "label": "low", "caption": "a low tone"}\n'
        '{"file_name": "y.wav", "label": "high", "caption": "a high tone"}\n',
    }
    seen = []
    for name, text in forms.items():
        for other in forms:
            (tmp_path / other).unlink(missing_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
        ds = AudioFolder(tmp_path, sample_rate=SR)
        seen.append(
            sorted((ds.entries[i].rel, ds.entries[i].label, ds.entries[i].caption) for i in range(len(ds)))
        )
    (tmp_path / "metadata.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("file_name,label\nx.wav,low\ny.wav,high\n")
    ds = AudioFolder(tmp_path, sample_rate=SR)
    assert seen[0] == seen[1] == [("x.wav", "low", "a low tone"), ("y.wav", "high", "a high tone")]
    assert ds.classes == ["high", "low"]


@pytest.mark.parametrize("where", [0.1, 20.0])
def test_non_finite_samples_anywhere_are_found_and_named(tmp_path, where) -> None:
    """A float wav with NaN past its first seconds (the scan used to read only the start) or a short one
    (it used to be called silent) is skipped naming the file and the time of the first bad sample."""
    n = int((where + 1.0) * SR)
    wave = 0.3 * torch.sin(2 * math.pi * 440 * torch.arange(n) / SR)
    wave[int(where * SR) :] = float("nan")
    import soundfile as sf

    sf.write(str(tmp_path / "nan.wav"), wave.float().numpy(), SR, subtype="FLOAT")  # write_audio refuses NaN
    write_audio(tmp_path / "ok.wav", tone(300.0, 0.5), SR)
    with pytest.warns(SkippedFileWarning):
        ds = AudioFolder(tmp_path, sample_rate=SR)
    assert len(ds) == 1
    ((path, reason),) = ds.skipped
    assert path.endswith("nan.wav") and f"NaN or infinite samples (the first at {where:.2f} s)" in reason


@pytest.mark.parametrize("clip_seconds", [None, 1.0, 0.25])
def test_preload_serves_the_same_items(tmp_path: Path, clip_seconds: float | None) -> None:
    """Decoded once into memory (resampled 44.1 kHz and 16 kHz files among them), items are the same waves:
    identical where nothing is cropped, equal to the resampler's rounding where a crop is cut."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SkippedFileWarning)
        make_folder(tmp_path)
        config = AudioFolderConfig(sample_rate=22050, clip_seconds=clip_seconds, labels="auto", seed=3)
        lazy, eager = AudioFolder(tmp_path, config), AudioFolder(tmp_path, config)
    assert eager.preload(workers=2, progress=False)
    for epoch in (0, 1):
        for i in range(len(lazy)):
            a, b = lazy.get(i, epoch), eager.get(i, epoch)
            assert a["label"] == b["label"] and torch.equal(a["mask"], b["mask"])
            if lazy.crop_start(i, epoch) == 0 and clip_seconds != 0.25:
                assert torch.equal(a["wave"], b["wave"])
            else:
                torch.testing.assert_close(a["wave"], b["wave"], atol=2e-3, rtol=0)
    assert not AudioFolder(tmp_path, config).preload(
        max_bytes=1000, progress=False
    )  # too big: nothing loaded
