"""multidiff demo / models: the synthetic data is what it says (balls move at their class's velocity, shapes
have their class's colour and form), bundled models are listed and resolved by name, generate --model and
--spectrogram, and the demos end to end."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from test_ui import audio_pipeline

import multidiff.models as models
from multidiff.cli import main
from multidiff.demo import BALL_CLASSES, SHAPE_CLASSES, ball_clip, shape_image


@pytest.mark.parametrize("cls", list(BALL_CLASSES))
def test_ball_moves_at_its_class_velocity(cls: str) -> None:
    color, (vr, vc) = BALL_CLASSES[cls]
    clip = ball_clip(cls, np.random.default_rng(3)).astype(np.float64)  # (F, H, W, 3)
    weight = clip.sum(-1)
    rows, cols = np.mgrid[0:16, 0:16]
    centroid = np.stack(
        [((weight[f] * rows).sum(), (weight[f] * cols).sum()) / weight[f].sum() for f in range(8)]
    )
    step = np.diff(centroid, axis=0).mean(0)  # pixels per frame
    speed = np.hypot(vr, vc)
    assert np.hypot(*step) == pytest.approx(speed, rel=0.25)  # speed factor in [0.8, 1.2]
    assert np.dot(step, (vr, vc)) / (np.hypot(*step) * speed) > 0.99  # the class's direction
    brightest = clip.reshape(-1, 3)[weight.reshape(-1).argmax()]
    np.testing.assert_allclose(brightest, color, atol=1)


def test_shapes_have_their_colour_and_form() -> None:
    rng = np.random.default_rng(0)
    for cls, color in SHAPE_CLASSES.items():
        image = shape_image(cls, rng).astype(int)
        inside = np.all(image == color, axis=-1)
        assert inside.sum() >= 9 and np.all(image[~inside & (np.abs(image - 30).sum(-1) == 0)] == 30)
        rows, cols = np.nonzero(inside)
        box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
        fill = inside.sum() / box  # square ~1, disc ~pi/4, cross well under both
        expected = {"red-disc": (0.6, 0.9), "green-square": (0.95, 1.0), "blue-cross": (0.2, 0.55)}[cls]
        assert expected[0] <= fill <= expected[1], (cls, fill)


def test_models_lists_resolves_and_generates_by_name(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(models, "MODELS_DIR", tmp_path / "models")
    assert main(["models"]) == 0 and "no bundled models" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no bundled model 'hum'.*bundles no models"):
        models.resolve("hum")
    audio_pipeline().save_pretrained(tmp_path / "models" / "tiny-tones")
    assert (
        models.available() == ["tiny-tones"]
        and models.resolve("tiny-tones") == tmp_path / "models" / "tiny-tones"
    )
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "tiny-tones: audio; 8000 Hz" in listed and "labels: hum, hiss" in listed
    out = tmp_path / "wavs"
    argv = ["generate", "audio", "--model", "tiny-tones", "--num", "2", "--seconds", "0.5", "--label", "hum",
            "--seed", "0", "--spectrogram", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    wavs, pngs = sorted(out.glob("*.wav")), sorted(out.glob("*.png"))
    assert len(wavs) == 2 and [p.stem for p in pngs] == [w.stem for w in wavs]
    assert iio.imread(pngs[0]).shape[1] > 400  # a plot with axes, not bare bins
    assert main(["generate", "audio", "--model", "nope", "--out", str(out)]) == 2
    assert "no bundled model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # neither --ckpt nor --model: an argparse error, one line
        main(["generate", "audio", "--out", str(out)])
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2
        and err.startswith("multidiff: error:")
        and len(err.strip().splitlines()) == 1
    )
    assert "one of the arguments --ckpt --model is required" in err


def test_demo_image_end_to_end(tmp_path, capsys) -> None:
    torch.set_num_threads(2)
    assert main(["demo", "image", "--out", str(tmp_path), "--steps", "2", "--num", "1"]) == 0
    overview = iio.imread(tmp_path / "samples" / "overview.png")
    assert overview.shape[0] == 3 * 96 + 2 * 2  # one row per class, tiles enlarged to 96 px
    run = tmp_path / "run"
    assert (run / "loss.png").is_file() and (run / "previews" / "step-00000002" / "grid.png").is_file()
    assert "red discs, green squares, blue crosses" in capsys.readouterr().out


def test_demo_unknown_modality(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "smell", "--out", "x"])
    assert exit_.value.code == 2 and "available: audio, image, video" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["audio", "video"])
def test_demo_audio_and_video_end_to_end(tmp_path, modality: str) -> None:
    assert main(["demo", modality, "--out", str(tmp_path), "--steps", "2", "--num", "1"]) == 0
    assert (tmp_path / "samples" / "overview.png").is_file() and (tmp_path / "run" / "loss.png").is_file()
    if modality == "video":
        frames = iio.imread(tmp_path / "samples" / "overview.gif")
        assert frames.shape[0] == 8
    else:
        assert len(list((tmp_path / "samples").glob("*/*.png"))) == 3  # a spectrogram beside each wav


def test_save_half_halves_the_weights_and_loads_back(tmp_path) -> None:
    """The bundled models' format: parameters in float16, buffers float32; loading casts back, and the
    loaded denoiser equals the original up to float16 rounding."""
    from safetensors.torch import load_file

    from multidiff.pipeline import load_pipeline

    pipe = audio_pipeline()
    pipe.save_pretrained(tmp_path / "full")
    models.save_half(tmp_path / "full", tmp_path / "half")
    state = load_file(str(tmp_path / "half" / "denoiser.safetensors"))
    params = dict(pipe.denoiser.named_parameters())
    assert params and all(state[k].dtype == torch.float16 for k in params)
    assert all(v.dtype != torch.float16 for k, v in state.items() if k not in params)
    back = load_pipeline(tmp_path / "half")
    for k, v in back.denoiser.state_dict().items():
        want = params[k].detach().half().float() if k in params else pipe.denoiser.state_dict()[k]
        assert v.dtype == pipe.denoiser.state_dict()[k].dtype and torch.equal(v, want), k
    with pytest.raises(ValueError, match="exists"):
        models.save_half(tmp_path / "full", tmp_path / "half")


def test_the_bundled_spoken_digit_model(tmp_path) -> None:
    """What ships: the spoken-digit model is listed, takes the ten words, fits the 25 MB budget with the rest,
    and generates a second of 22.05 kHz audio per word on the CPU through the CLI."""
    import soundfile as sf

    assert "spoken-digits" in models.available()
    info = models.describe(models.resolve("spoken-digits"))
    assert info.modality == "audio" and sorted(info.labels) == sorted(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    )
    total = sum(f.stat().st_size for f in models.MODELS_DIR.rglob("*") if f.is_file())
    assert total <= 25 * 2**20
    out = tmp_path / "out"
    argv = ["generate", "audio", "--model", "spoken-digits", "--label", "seven", "--num", "2", "--steps", "8",
            "--seed", "0", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 2
    wave, rate = sf.read(wavs[0])
    assert rate == 22050 and wave.shape[0] == pytest.approx(22050, rel=0.02) and np.abs(wave).max() > 0.01


def test_the_bundled_moving_digit_model(tmp_path) -> None:
    """What ships: the moving-digit model is listed with the ten digits and generates, through the CLI on the
    CPU, 16 frames of 32x32 in which every frame holds one bright digit-sized glyph on a dark ground (not
    noise, not blank), and the label changes what is drawn."""
    assert "moving-digits" in models.available()
    info = models.describe(models.resolve("moving-digits"))
    assert info.modality == "video" and list(info.labels) == [str(d) for d in range(10)]
    clips = {}
    for label in ("1", "8"):
        out = tmp_path / label
        argv = ["generate", "video", "--model", "moving-digits", "--label", label, "--num", "1", "--steps", "12",
                "--seed", "0", "--quiet", "--gif", "--out", str(out)]  # fmt: skip
        assert main(argv) == 0
        (gif,) = sorted(out.glob("*.gif"))
        clips[label] = iio.imread(gif).astype(np.float32).mean(-1) / 255  # (F, H, W) grey in [0, 1]
    for frames in clips.values():
        assert frames.shape == (16, 32, 32)
        lit = (frames > 0.5).mean((1, 2))  # share of bright pixels per frame
        assert (lit > 0.02).all() and (lit < 0.3).all(), lit
        assert np.median(frames) < 0.1  # dark ground
    assert np.abs(clips["1"] - clips["8"]).mean() > 0.02  # same seed, another digit


def test_gallery_remakes_pictures_and_keeps_the_other_entries(tmp_path) -> None:
    """benchmarks/gallery.py writes one spectrogram picture per pipeline and lists it in index.md; a later run
    for another pipeline adds its entry and keeps the earlier one (the README's gallery is made in parts)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import gallery

    audio_pipeline().save_pretrained(tmp_path / "pipe")
    out = tmp_path / "gallery"
    (first,) = gallery.main([str(tmp_path / "pipe"), "--name", "one", "--out", str(out)])
    (second,) = gallery.main([str(tmp_path / "pipe"), "--name", "two", "--out", str(out)])
    assert first.name == "one.png" and second.name == "two.png"
    index = (out / "index.md").read_text()
    assert "](one.png)" in index and "](two.png)" in index and index.count("](two.png)") == 1
    pixels = iio.imread(first)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.std() > 10  # a picture, not a blank
