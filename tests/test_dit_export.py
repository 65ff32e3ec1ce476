"""Export of a multidiff DiT to a diffusers DiTTransformer2DModel folder, and back."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from multidiff.interop.convert import dit_from_diffusers, dit_to_diffusers, save_dit_as_diffusers
from multidiff.nn.dit import DiT, DiTConfig

diffusers = pytest.importorskip("diffusers")


def _tiny_dit(**overrides) -> DiT:
    cfg = DiTConfig(
        in_channels=4,
        out_channels=8,
        patch=(2, 2),
        width=32,
        depth=2,
        heads=2,
        num_classes=10,
        pos_embed="sincos",
        noise_freq_shift=1.0,
        **overrides,
    )
    torch.manual_seed(0)
    dit = DiT(cfg).eval()
    with torch.no_grad():  # random weights everywhere, including the zero-initialised adaLN and output
        for p in dit.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return dit


def test_exported_folder_computes_the_same_function(tmp_path) -> None:
    dit = _tiny_dit()
    folder = save_dit_as_diffusers(dit, tmp_path / "dit", sample_size=8)
    ref = diffusers.DiTTransformer2DModel.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    labels = torch.tensor([0, 3, 9, 10])  # 10 is the null label
    with torch.no_grad():
        theirs = ref(x, t, class_labels=labels).sample
        ours = dit(x, t.float(), labels=labels)
    assert theirs.shape == ours.shape == (4, 8, 8, 8)
    assert ours.abs().mean() > 0.1
    assert float((theirs - ours).norm() / ours.norm()) < 1e-4


def test_export_then_import_round_trips_the_weights() -> None:
    dit = _tiny_dit()
    back = dit_from_diffusers(dit_to_diffusers(dit, 8).state_dict(), dit_to_diffusers(dit, 8).config)
    assert back.config == dit.config
    a, b = dit.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"pos_embed": "rope"}, "pos_embed"),
        ({"qk_norm": True}, "qk_norm"),
        ({"context_dim": 16}, "context_dim"),
        ({"norm_eps": 1e-5}, "norm_eps"),
        ({"noise_freq_shift": 0.0}, "noise_freq_shift"),
        ({"num_classes": None}, "num_classes"),
    ],
)
def test_export_refuses_what_diffusers_cannot_express(override, message) -> None:
    dit = DiT(dataclasses.replace(_tiny_dit().config, **override))
    with pytest.raises(ValueError, match=message):
        dit_to_diffusers(dit, 8)


def test_export_refuses_a_sample_size_off_the_patch_grid() -> None:
    with pytest.raises(ValueError, match="sample_size"):
        dit_to_diffusers(_tiny_dit(), 7)


def test_export_and_save_never_replace_another_models_config(tmp_path) -> None:
    """A DiT exported over a multidiff pipeline folder, or a pipeline saved over a diffusers folder, would
    have replaced its config.json and left neither loadable: both are refused, the files untouched."""
    from multidiff.core.denoiser import Denoiser
    from multidiff.pipeline import Pipeline, load_pipeline

    dit = _tiny_dit()
    pipe = Pipeline(Denoiser(dit, "edm"))
    pipe.save_pretrained(tmp_path / "pipe")
    with pytest.raises(ValueError, match="holds a pipeline"):
        save_dit_as_diffusers(dit, tmp_path / "pipe", sample_size=8)
    assert isinstance(load_pipeline(tmp_path / "pipe"), Pipeline)
    exported = save_dit_as_diffusers(dit, tmp_path / "dit", sample_size=8)
    before = (exported / "config.json").read_text()
    with pytest.raises(ValueError, match="holds another model"):
        pipe.save_pretrained(exported)
    assert (exported / "config.json").read_text() == before
    pipe.save_pretrained(tmp_path / "pipe")  # its own folder: saved again
