"""Caption conditioning end to end: a pipeline with a text encoder (prompt encoding, guidance against the
null caption, save/load), and the tiny audio recipe with ``--captions`` (train, exact resume, generate)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch

from multidiff import train
from multidiff.cli import load_recipe
from multidiff.core.denoiser import Denoiser
from multidiff.io import write_audio
from multidiff.modalities.audio import MelAdapter, MelAdapterConfig, MelSpec
from multidiff.nn.text import NULL_CAPTION, TEXT_ENCODER_PRESETS, ByteTextEncoder
from multidiff.nn.unet import UNet, UNetConfig
from multidiff.pipeline import AudioPipeline, SamplingConfig, load_pipeline

torch.set_num_threads(1)

SPEC = MelSpec(
    sample_rate=8000, n_fft=256, win_length=256, hop_length=64, n_mels=16, fmax=4000.0, edge_pad=96
)


def caption_pipeline(seed: int = 0, num_classes: int | None = None, **kwargs) -> AudioPipeline:
    """A tiny mel pipeline whose U-Net cross-attends (mid block) to a tiny ByteTextEncoder."""
    torch.manual_seed(seed)
    text = ByteTextEncoder(TEXT_ENCODER_PRESETS["tiny"])
    unet = UNet(
        UNetConfig(
            in_channels=1,
            channels=(8, 16),
            num_res_blocks=1,
            attention_levels=(),
            mid_attention=True,
            head_dim=8,
            norm_groups=4,
            noise_freq_dim=16,
            emb_dim=32,
            context_dim=text.dim,
            num_classes=num_classes,
        )
    )
    for p in unet.parameters():  # random weights everywhere (zero-initialised outputs would hide the context)
        torch.nn.init.normal_(p, std=0.1)
    adapter = MelAdapter(MelAdapterConfig(spec=SPEC))
    t = torch.arange(8000) / 8000
    adapter.fit_stats([(0.5 * torch.sin(2 * math.pi * 440 * t))[None, None]])
    sampling = kwargs.pop("sampling", SamplingConfig(sampler="euler", steps=3, guidance=3.0))
    denoiser = Denoiser(unet, "edm", sigma_data=0.5)
    labels = [f"class{k}" for k in range(num_classes)] if num_classes else None
    return AudioPipeline(denoiser, adapter, sampling=sampling, text_encoder=text, labels=labels, **kwargs)


def test_encode_prompt_shares_the_token_length_with_the_null_caption() -> None:
    pipe = caption_pipeline()
    cond, uncond = pipe.encode_prompt(["a", "a much longer caption"], 2)
    L = len("a much longer caption") + 1  # bytes + the start token
    assert cond["context"].shape == (2, L, 64) and cond["context_mask"].shape == (2, L)
    assert uncond["context"].shape == (1, L, 64) and uncond["context_mask"].shape == (1, L)
    assert cond["context_mask"].sum(1).tolist() == [2, L]
    assert uncond["context_mask"].sum().item() == 1  # the null caption is the start token alone
    # The null context is the encoder's own encoding of the null caption.
    alone, mask = pipe.text_encoder.encode([NULL_CAPTION], pad_to=L)
    torch.testing.assert_close(uncond["context"], alone)
    # One prompt for several samples is repeated; a wrong count is refused.
    c1, _ = pipe.encode_prompt("hi", 3)
    assert c1["context"].shape[0] == 3 and torch.equal(c1["context"][0], c1["context"][2])
    with pytest.raises(ValueError, match="3 prompts for 2 samples"):
        pipe.encode_prompt(["a", "b", "c"], 2)


def test_guidance_sees_cond_and_null_contexts_of_one_length_in_one_batch() -> None:
    pipe = caption_pipeline()
    seen = []
    backbone_forward = pipe.backbone.forward

    def spy(x, c_noise, **kw):
        seen.append((x.shape[0], kw["context"].shape, kw["context_mask"].clone()))
        return backbone_forward(x, c_noise, **kw)

    pipe.backbone.forward = spy
    guided = pipe.generate(2, 0.2, prompt=["low tone", "x"], seed=1, progress=False)
    assert all(b == 4 and shape[:2] == (4, 9) for b, shape, _ in seen)  # 2 cond + 2 null, L = 8 bytes + start
    assert seen[0][2].sum(1).tolist() == [9, 2, 1, 1]  # cond masks, then the null caption's
    # Guidance changes the result; scale 1 is the plain conditional model (one batch of 2, no null half).
    seen.clear()
    plain = pipe.generate(2, 0.2, prompt=["low tone", "x"], seed=1, guidance=1.0, progress=False)
    assert all(b == 2 for b, _, _ in seen)
    assert not torch.allclose(guided, plain)
    # The prompt matters, and sample k does not depend on the other prompts of the batch.
    other = pipe.generate(2, 0.2, prompt=["high tone", "x"], seed=1, progress=False)
    assert not torch.allclose(guided[0], other[0])
    torch.testing.assert_close(guided[1], other[1], atol=1e-5, rtol=1e-5)


def test_label_and_prompt_are_guided_together_and_windows_repeat_the_context() -> None:
    pipe = caption_pipeline(num_classes=2, window=4)
    seen = []
    backbone_forward = pipe.backbone.forward

    def spy(x, c_noise, **kw):
        seen.append((kw["labels"].tolist(), kw["context_mask"].sum(1).tolist(), x.shape[-1]))
        return backbone_forward(x, c_noise, **kw)

    pipe.backbone.forward = spy
    out = pipe.generate(1, 0.1, label="class1", prompt="abc", seed=0, progress=False)
    assert out.shape == (1, 1, 800)
    # More mel frames than the window of 4: each call holds k windows of the guidance batch (cond, null).
    assert len(seen) > 0 and max(len(labels) for labels, _, _ in seen) > 2
    for labels, lengths, t in seen:
        k = len(labels) // 2
        assert t == 4 and labels == [1, 2] * k and lengths == [4, 1] * k


def test_caption_pipeline_round_trip_gives_identical_samples(tmp_path) -> None:
    pipe = caption_pipeline()
    a = pipe.generate(2, 0.25, prompt="low tone", seed=3, progress=False)
    pipe.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["text_encoder"] == {"type": "byte"}
    assert (tmp_path / "p" / "text_encoder" / "config.json").is_file()
    loaded = load_pipeline(tmp_path / "p")
    assert isinstance(loaded.text_encoder, ByteTextEncoder)
    b = loaded.generate(2, 0.25, prompt="low tone", seed=3, progress=False)
    assert torch.equal(a, b)
    # A missing text encoder folder is a clear error naming it.
    for f in (tmp_path / "p" / "text_encoder").iterdir():
        f.unlink()
    (tmp_path / "p" / "text_encoder").rmdir()
    with pytest.raises(ValueError, match="text_encoder"):
        load_pipeline(tmp_path / "p")


class _FakeTokenizer:
    """Byte ids, padded to the longest caption (stands in for a transformers tokenizer)."""

    model_max_length = 16

    def __call__(self, captions, padding, truncation, max_length, return_tensors):
        ids = [list(c.encode())[: max_length - 1] + [1] for c in captions]
        L = max(len(r) for r in ids)
        return {
            "input_ids": torch.tensor([r + [0] * (L - len(r)) for r in ids]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (L - len(r)) for r in ids]),
        }


class _FakeTextModel(torch.nn.Module):
    """An embedding table with a transformers-like config and output."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(256, 64)
        self.config = type("Config", (), {"hidden_size": 64, "_name_or_path": str(path)})()

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"last_hidden_state": self.embed(input_ids)})()


def test_transformers_encoder_is_referenced_by_its_folder(tmp_path, monkeypatch) -> None:
    import multidiff.nn.text as text_module
    from multidiff.nn.text import HFTextEncoder

    folder = tmp_path / "clip"
    folder.mkdir()
    pipe = caption_pipeline()
    pipe.text_encoder = HFTextEncoder(_FakeTextModel(folder), _FakeTokenizer())
    a = pipe.generate(1, 0.2, prompt="low tone", seed=2, progress=False)
    pipe.save_pretrained(tmp_path / "p")
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    assert config["text_encoder"] == {"type": "hf", "path": str(folder.resolve())}
    assert not (tmp_path / "p" / "text_encoder").exists()  # referenced, not copied
    calls = []
    monkeypatch.setattr(text_module, "load_text_encoder", lambda p: calls.append(p) or pipe.text_encoder)
    loaded = load_pipeline(tmp_path / "p")
    assert calls == [folder.resolve()]
    assert torch.equal(loaded.generate(1, 0.2, prompt="low tone", seed=2, progress=False), a)
    folder.rmdir()
    with pytest.raises(ValueError, match="text encoder folder .*clip does not exist"):
        load_pipeline(tmp_path / "p")


def test_prompt_needs_a_text_encoder_and_widths_must_match() -> None:
    pipe = caption_pipeline()
    text = pipe.text_encoder
    pipe.text_encoder = None
    with pytest.raises(ValueError, match="without captions"):
        pipe.generate(1, 0.2, prompt="low tone", seed=0, progress=False)
    wide = ByteTextEncoder(TEXT_ENCODER_PRESETS["small"])
    with pytest.raises(ValueError, match="width 256 differs from the backbone's context_dim 64"):
        AudioPipeline(pipe.denoiser, pipe.adapter, text_encoder=wide)
    assert text.dim == 64


# ---------------------------------------------------------------------------------------------------
# The recipe
# ---------------------------------------------------------------------------------------------------

SR = 16000


def captioned_tones(root: Path) -> Path:
    """Sine tones of two pitches captioned "low tone" / "high tone" in metadata.csv."""
    root.mkdir(parents=True)
    t = torch.arange(int(0.8 * SR), dtype=torch.float64) / SR
    rows = []
    for caption, base in (("low tone", 220.0), ("high tone", 1500.0)):
        for k in range(2):
            name = f"{caption.split()[0]}{k}.wav"
            write_audio(root / name, (0.4 * torch.sin(2 * math.pi * base * (1 + 0.1 * k) * t)).float(), SR)
            rows.append({"path": name, "caption": caption})
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def recipe_args(data: Path, out: Path, steps: int) -> list[str]:
    return [
        "--data", str(data), "--out", str(out), "--preset", "tiny", "--steps", str(steps), "--batch", "2",
        "--seconds", "0.5", "--captions", "--caption-dropout", "0.3", "--ckpt-every", "2",
        "--preview-every", "0", "--sample-steps", "2", "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip


def test_caption_recipe_trains_resumes_exactly_and_generates(tmp_path, capsys) -> None:
    trainer = load_recipe("train_audio.py")
    data = captioned_tones(tmp_path / "data")
    trainer.main(recipe_args(data, tmp_path / "full", 4))
    trainer.main(recipe_args(data, tmp_path / "run", 2))
    trainer.main(recipe_args(data, tmp_path / "run", 4))
    assert "resuming from" in capsys.readouterr().out
    full = train.latest_checkpoint(tmp_path / "full")
    resumed = train.latest_checkpoint(tmp_path / "run")
    assert full.step == resumed.step == 4
    for part in ("model", "ema"):
        a, b = full.tensors(part), resumed.tensors(part)
        assert sorted(a) == sorted(b) and any(k.startswith("text_encoder.") for k in a)
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)
    # The text encoder is trained jointly: its weights move between the checkpoints of steps 2 and 4.
    ckpts = train.list_checkpoints(tmp_path / "full")
    assert [c.step for c in ckpts][-2:] == [2, 4]
    early, late = (c.tensors("model") for c in ckpts[-2:])
    assert any(not torch.equal(early[k], late[k]) for k in early if k.startswith("text_encoder."))
    pipe = load_pipeline(tmp_path / "full" / "pipeline")
    assert isinstance(pipe.text_encoder, ByteTextEncoder)
    ema = full.tensors("ema")
    for k, v in pipe.text_encoder.state_dict().items():  # the saved pipeline holds the EMA weights
        assert torch.equal(v, ema["text_encoder." + k].to(v.dtype)), k

    generator = load_recipe("generate_audio.py")
    out = tmp_path / "gen"
    generator.main(
        [
            "--ckpt",
            str(tmp_path / "full"),
            "--num",
            "1",
            "--seconds",
            "0.75",
            "--out",
            str(out),
            "--prompt",
            "low tone",
            "--steps",
            "2",
            "--seed",
            "0",
            "--device",
            "cpu",
        ]  # fmt: skip
    )
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == 1
    info = sf.info(str(wavs[0]))
    assert info.samplerate == SR and info.frames == 12000


def test_caption_recipe_needs_captions(tmp_path) -> None:
    data = captioned_tones(tmp_path / "data")
    trainer = load_recipe("train_audio.py")
    # Labels but no captions in metadata.csv.
    (data / "metadata.csv").write_text("path,label\nlow0.wav,low\nlow1.wav,low\nhigh0.wav,high\n")
    # (high1.wav, not listed, is used too, so it lacks a caption as well)
    with pytest.raises(ValueError, match=r"4 file\(s\) in .* have no captions in metadata.csv"):
        trainer.main(recipe_args(data, tmp_path / "run", 2))
    # No metadata.csv at all.
    (data / "metadata.csv").unlink()
    with pytest.raises(ValueError, match="has no metadata.csv"):
        trainer.main(recipe_args(data, tmp_path / "run", 2))
