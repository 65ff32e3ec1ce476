"""``--init``: every train recipe starts from a trained model's weights and adapter statistics; another
preset or other adapter settings are refused naming what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from multidiff.cli import main as cli
from multidiff.pipeline import AudioPipeline

torch.set_num_threads(1)


def args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "audio", "--data", str(data), "--out", str(out), "--preset", "tiny", "--batch", "2",
            "--seconds", "0.25", "--device", "cpu", *extra]  # fmt: skip


def test_init_starts_from_the_base_weights_and_statistics(tmp_path: Path, tone_folder, capsys) -> None:
    base_data, new_data = tone_folder("a", (200.0, 400.0, 600.0)), tone_folder("b", (900.0, 1800.0, 2700.0))
    assert cli(args(base_data, tmp_path / "base", "--steps", "4")) == 0
    base = AudioPipeline.from_pretrained(tmp_path / "base" / "pipeline")
    # a learning rate of ~0 and an EMA that follows at once: the fine-tuned model is the base model
    assert cli(args(new_data, tmp_path / "ft", "--steps", "1", "--init", str(tmp_path / "base"),
                    "--lr", "1e-12", "--ema-decay", "0"))  == 0  # fmt: skip
    ft = AudioPipeline.from_pretrained(tmp_path / "ft" / "pipeline")
    a, b = base.denoiser.state_dict(), ft.denoiser.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert torch.equal(base.adapter.mean, ft.adapter.mean) and torch.equal(base.adapter.std, ft.adapter.std)
    # from random weights on the new data, the statistics are the new data's
    assert cli(args(new_data, tmp_path / "scratch", "--steps", "1")) == 0
    scratch = AudioPipeline.from_pretrained(tmp_path / "scratch" / "pipeline")
    assert not torch.equal(scratch.adapter.mean, base.adapter.mean)
    capsys.readouterr()


def test_init_from_another_preset_or_adapter_is_refused(tmp_path: Path, tone_folder, capsys) -> None:
    data = tone_folder()
    assert cli(args(data, tmp_path / "base", "--steps", "1")) == 0
    capsys.readouterr()
    assert (
        cli(
            args(
                data, tmp_path / "dit", "--steps", "1", "--backbone", "dit", "--init", str(tmp_path / "base")
            )
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("multidiff: error:") and "--init" in err and "preset and backbone" in err
    assert cli(["train", "audio", "--data", str(data), "--out", str(tmp_path / "small"), "--preset", "small",
                "--batch", "2", "--seconds", "0.25", "--device", "cpu", "--steps", "1",
                "--init", str(tmp_path / "base")]) == 2  # fmt: skip
    assert "other adapter settings" in capsys.readouterr().err
    family = tmp_path / "audioldm"  # a diffusers folder is named for what it is, before any work
    family.mkdir()
    (family / "model_index.json").write_text('{"_class_name": "AudioLDMPipeline"}')
    assert cli(args(data, tmp_path / "fam", "--steps", "1", "--init", str(family))) == 2
    err = capsys.readouterr().err
    assert err.startswith("multidiff: error: train audio: --init:") and "AudioLDMPipeline folder" in err
    assert "not supported yet" in err and "mel front end" in err
    assert not (tmp_path / "fam" / "pipeline").exists()


def test_init_with_other_labels_or_captions_is_refused_naming_the_option(
    tmp_path: Path, tone_folder, capsys
) -> None:
    data = tone_folder()
    (data / "metadata.csv").write_text("path,label\n0.wav,low\n1.wav,low\n2.wav,high\n")
    assert cli(args(data, tmp_path / "labelled", "--steps", "1", "--labels")) == 0
    assert cli(args(data, tmp_path / "plain", "--steps", "1")) == 0
    capsys.readouterr()
    for init, extra, words in (
        ("labelled", [], "was trained with --labels (2 classes: high, low); add --labels"),
        ("plain", ["--labels"], "was trained without --labels; drop --labels"),
    ):
        out = tmp_path / f"ft-{init}"
        assert cli(args(data, out, "--steps", "1", "--init", str(tmp_path / init), *extra)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("multidiff: error: train audio: --init:") and words in err, err
        assert len(err.splitlines()) == 1 and not out.exists()  # refused before the data is read
    assert cli(args(data, tmp_path / "ft", "--steps", "1", "--init", str(tmp_path / "labelled"), "--labels")) == 0
    other = tmp_path / "hf-model"  # a config.json that is not a multidiff pipeline's: one line, no traceback
    other.mkdir()
    (other / "config.json").write_text('{"backbone": "resnet50"}')
    capsys.readouterr()
    assert cli(args(data, tmp_path / "ft-hf", "--steps", "1", "--init", str(other), "--labels")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("multidiff: error:") and "is not a multidiff pipeline's config" in err, err
    assert len(err.splitlines()) == 1 and not (tmp_path / "ft-hf").exists()


def test_lora_trains_only_the_attention_updates_saves_them_small_and_loads_on_the_base(
    tmp_path: Path, tone_folder, capsys
) -> None:
    """``--init BASE --lora 4``: only the LoRA layers train (every other weight of the merged pipeline equals
    the base's), the run writes the adapter alone beside the merged pipeline, and ``load_lora`` on the base
    pipeline gives the merged weights back."""
    pytest.importorskip("peft", reason="LoRA needs the lora extra: pip install 'multidiff[lora]'")
    from safetensors.torch import load_file

    from multidiff.lora import load_lora

    base_data, new_data = tone_folder("a"), tone_folder("b", (1000.0, 1500.0, 2500.0))
    dit = ["--backbone", "dit"]
    assert cli(args(base_data, tmp_path / "base", "--steps", "3", *dit)) == 0
    assert cli(args(new_data, tmp_path / "ft", "--steps", "3", *dit, "--init", str(tmp_path / "base"),
                    "--lora", "4", "--lr", "1e-2"))  == 0  # fmt: skip
    base = AudioPipeline.from_pretrained(tmp_path / "base" / "pipeline")
    ft = AudioPipeline.from_pretrained(tmp_path / "ft" / "pipeline")
    a, b = base.denoiser.state_dict(), ft.denoiser.state_dict()
    changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
    assert changed and all(".attn." in k and k.endswith(".weight") for k in changed)
    adapter = load_file(str(tmp_path / "ft" / "pipeline" / "lora" / "adapter.safetensors"))
    n_lora, n_all = sum(v.numel() for v in adapter.values()), sum(v.numel() for v in a.values())
    assert all("lora_" in k for k in adapter) and n_lora < 0.2 * n_all
    again = load_lora(
        AudioPipeline.from_pretrained(tmp_path / "base" / "pipeline"), tmp_path / "ft" / "pipeline"
    )
    c = again.denoiser.state_dict()
    assert all(torch.allclose(b[k], c[k], atol=1e-6) for k in b)
    capsys.readouterr()
