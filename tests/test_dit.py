"""Tests of the DiT backbone: shapes, adaLN-Zero init, gradients, conditioning, presets, save/load."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from multidiff.nn.dit import DIT_PRESETS, DiT, DiTConfig, dit_from_preset


def _tiny(**kw: object) -> DiTConfig:
    base = dict(in_channels=4, patch=(2, 2), width=32, depth=2, heads=4)
    base.update(kw)
    return DiTConfig(**base)  # type: ignore[arg-type]


def _perturb_zero_init(model: DiT, seed: int = 0) -> None:
    """Give the zero-initialised adaLN and output layers random weights so the output depends on x."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ada.proj" in name or "final_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_image_shapes_odd_size_and_zero_output_at_init() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(num_classes=10, out_channels=8))
    x = torch.randn(2, 4, 30, 34)
    y = model(x, torch.tensor([0.5, 800.0]), labels=torch.tensor([3, 10]))
    assert y.shape == (2, 8, 30, 34)
    assert torch.count_nonzero(y) == 0  # adaLN-Zero: final layer starts at zero
    model3 = DiT(_tiny(patch=(2, 4)))  # unequal patch, odd size needing padding on both axes
    assert model3(torch.randn(1, 4, 7, 13), torch.zeros(1)).shape == (1, 4, 7, 13)


@pytest.mark.parametrize("attention", ["joint", "factorised"])
@pytest.mark.parametrize("pos_embed", ["rope", "sincos"])
def test_video_shapes_joint_and_factorised(attention: str, pos_embed: str) -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(patch=(2, 2, 2), depth=2, attention=attention, pos_embed=pos_embed))
    _perturb_zero_init(model)
    x = torch.randn(2, 4, 5, 14, 18)
    y = model(x, torch.randn(2))
    assert y.shape == (2, 4, 5, 14, 18)
    assert torch.isfinite(y).all() and y.abs().sum() > 0


def test_factorised_temporal_block_mixes_frames_and_spatial_block_does_not() -> None:
    torch.manual_seed(0)
    cfg = _tiny(patch=(1, 2, 2), depth=1, attention="factorised")  # one spatial block only
    model = DiT(cfg)
    _perturb_zero_init(model)
    x = torch.randn(1, 4, 3, 4, 4)
    x2 = x.clone()
    x2[:, :, 0] += 1.0  # change frame 0 only
    c = torch.zeros(1)
    d = (model(x, c) - model(x2, c)).abs().sum(dim=(0, 1, 3, 4))  # per frame
    assert d[0] > 0 and d[1] == 0 and d[2] == 0  # spatial attention: frames independent
    model2 = DiT(dataclasses.replace(cfg, depth=2))  # spatial then temporal
    _perturb_zero_init(model2)
    d2 = (model2(x, c) - model2(x2, c)).abs().sum(dim=(0, 1, 3, 4))
    assert (d2 > 0).all()


def test_video_joint_and_factorised_differ_but_share_parameter_shapes() -> None:
    torch.manual_seed(0)
    joint = DiT(_tiny(patch=(1, 2, 2), attention="joint"))
    fact = DiT(_tiny(patch=(1, 2, 2), attention="factorised"))
    fact.load_state_dict(joint.state_dict())
    _perturb_zero_init(joint)
    _perturb_zero_init(fact)
    x = torch.randn(1, 4, 3, 6, 6)
    assert not torch.allclose(joint(x, torch.ones(1)), fact(x, torch.ones(1)))


def test_bf16_autocast_finite() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(num_classes=5, qk_norm=True, context_dim=6))
    _perturb_zero_init(model)
    x = torch.randn(2, 4, 10, 12)
    ctx, mask = torch.randn(2, 3, 6), torch.tensor([[True, True, False], [False, False, False]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x, torch.tensor([-1.3, 2.0]), labels=torch.tensor([0, 5]), context=ctx, context_mask=mask)
    assert torch.isfinite(y).all() and y.abs().sum() > 0
    ref = model(x, torch.tensor([-1.3, 2.0]), labels=torch.tensor([0, 5]), context=ctx, context_mask=mask)
    assert (y.float() - ref).norm() / ref.norm() < 0.05


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    cfg = _tiny(
        patch=(1, 2, 2), attention="factorised", num_classes=3, context_dim=6, cond_channels=2, qk_norm=True
    )
    model = DiT(cfg)
    _perturb_zero_init(model)
    x = torch.randn(2, 4, 3, 6, 5)
    y = model(
        x,
        torch.randn(2),
        labels=torch.tensor([0, 2]),
        context=torch.randn(2, 4, 6),
        context_mask=torch.ones(2, 4, dtype=torch.bool),
        cond_channels=torch.randn(2, 2, 3, 6, 5),
    )
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == [], missing


def test_gradients_with_checkpointing_match() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny())
    _perturb_zero_init(model)
    ckpt = DiT(dataclasses.replace(model.config, grad_checkpointing=True))
    ckpt.load_state_dict(model.state_dict())
    x = torch.randn(2, 4, 6, 6)
    for m in (model, ckpt):
        m(x, torch.ones(2)).square().sum().backward()
    for (n, a), b in zip(model.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=n)


def test_context_mask_respected() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(context_dim=6))
    _perturb_zero_init(model)
    x, c = torch.randn(2, 4, 6, 6), torch.randn(2)
    ctx = torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, False, False, True], [True, False, False, False, False]])
    y = model(x, c, context=ctx, context_mask=mask)
    ctx2 = ctx.clone()
    ctx2[~mask] = 100 * torch.randn(int((~mask).sum()), 6)
    torch.testing.assert_close(model(x, c, context=ctx2, context_mask=mask), y)
    ctx3 = ctx.clone()
    ctx3[0, 0] += 1.0  # a kept token does change the output
    assert not torch.allclose(model(x, c, context=ctx3, context_mask=mask)[0], y[0])


def test_labels_and_noise_level_condition_the_output() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(num_classes=4))
    _perturb_zero_init(model)
    x = torch.randn(1, 4, 6, 6)
    base = model(x, torch.tensor([0.1]), labels=torch.tensor([1]))
    assert not torch.allclose(base, model(x, torch.tensor([0.1]), labels=torch.tensor([2])))
    assert not torch.allclose(base, model(x, torch.tensor([0.2]), labels=torch.tensor([1])))
    # labels=None means the null label.
    torch.testing.assert_close(
        model(x, torch.tensor([0.1])), model(x, torch.tensor([0.1]), labels=torch.tensor([4]))
    )


def test_cond_channels_concatenated_and_validated() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(cond_channels=3))
    _perturb_zero_init(model)
    x = torch.randn(1, 4, 6, 6)
    a = model(x, torch.zeros(1), cond_channels=torch.zeros(1, 3, 6, 6))
    b = model(x, torch.zeros(1), cond_channels=torch.ones(1, 3, 6, 6))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="cond_channels"):
        model(x, torch.zeros(1))
    with pytest.raises(ValueError, match="labels"):
        model(
            x, torch.zeros(1), labels=torch.zeros(1, dtype=torch.long), cond_channels=torch.zeros(1, 3, 6, 6)
        )


def test_padding_does_not_leak_across_crop() -> None:
    # Sizes smaller than, equal to and not divisible by the patch: the crop returns the input's size.
    model = DiT(_tiny(patch=(4, 4)))
    for size in [(1, 1), (4, 4), (5, 9), (17, 3)]:
        assert model(torch.randn(1, 4, *size), torch.zeros(1)).shape == (1, 4, *size)


def test_compiles_without_graph_breaks() -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(patch=(1, 2, 2), attention="factorised", num_classes=3, context_dim=6, qk_norm=True))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 4, 3, 6, 5)
    kw = dict(
        labels=torch.tensor([0, 3]),
        context=torch.randn(2, 2, 6),
        context_mask=torch.ones(2, 2, dtype=torch.bool),
    )
    for p in model.parameters():  # no adaLN-Zero zeros: the output depends on every input
        torch.nn.init.normal_(p, std=0.05)
    c_noise = torch.randn(2)
    want = model(x, c_noise, **kw)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(compiled(x, c_noise, **kw), want, rtol=1e-5, atol=1e-6)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="heads"):
        _tiny(width=30, heads=4)
    with pytest.raises(ValueError, match="factorised"):
        _tiny(attention="factorised")
    with pytest.raises(ValueError, match="pos_embed"):
        _tiny(pos_embed="learned")
    with pytest.raises(ValueError, match="attention_backends"):
        _tiny(attention_backends=("fast",))
    with pytest.raises(ValueError, match="expects"):
        DiT(_tiny())(torch.randn(1, 3, 4, 4), torch.zeros(1))


def test_preset_parameter_counts_match_paper() -> None:
    # DiT paper (Peebles and Xie 2023) / official models: S/2 33M, B/2 130M, L/2 458M, XL/2 675M
    # parameters for 4x32x32 latents, 1000 classes and a learned-sigma (8-channel) output. The official
    # DiT-XL/2 prints 675,129,632, which includes its frozen 256x1152 sin-cos table stored as a
    # parameter; our table is computed, not stored.
    paper_millions = {"DiT-S/2": 33, "DiT-B/2": 130, "DiT-L/2": 458, "DiT-XL/2": 675}
    for name, millions in paper_millions.items():
        with torch.device("meta"):
            n = sum(p.numel() for p in DiT(DIT_PRESETS[name]).parameters())
        assert round(n / 1e6) == millions, (name, n)
    with torch.device("meta"):
        n_xl = sum(p.numel() for p in DiT(DIT_PRESETS["DiT-XL/2"]).parameters())
    assert n_xl == 675_129_632 - 256 * 1152
    assert set(DIT_PRESETS) == {f"DiT-{s}/{p}" for s in ("S", "B", "L", "XL") for p in (2, 4, 8)}
    assert DIT_PRESETS["DiT-L/4"].patch == (4, 4) and DIT_PRESETS["DiT-L/4"].depth == 24
    with torch.device("meta"):
        m = dit_from_preset("DiT-S/8", num_classes=None)
    assert m.config.num_classes is None and m.config.width == 384
    with pytest.raises(ValueError, match="unknown DiT preset"):
        dit_from_preset("DiT-M/2")


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DiT(_tiny(patch=(1, 2, 2), attention="factorised", num_classes=3, qk_norm=True))
    _perturb_zero_init(model)
    model.save_pretrained(tmp_path / "m")
    cfg_json = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg_json["model"] == "DiT" and cfg_json["config"]["patch"] == [1, 2, 2]
    loaded = DiT.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config
    x = torch.randn(1, 4, 2, 4, 4)
    torch.testing.assert_close(loaded(x, torch.ones(1)), model(x, torch.ones(1)), rtol=0, atol=0)


def test_load_rejects_mismatched_config(tmp_path: Path) -> None:
    model = DiT(_tiny())
    model.save_pretrained(tmp_path)
    payload = json.loads((tmp_path / "config.json").read_text())
    payload["config"]["width"] = 48
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(
        ValueError, match=r"shape mismatches.*to_qkv\.weight: file \(96, 32\) vs config \(144, 48\)"
    ) as err:
        DiT.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value)
    payload["config"]["width"] = 32
    payload["config"]["num_classes"] = 7  # adds a label table the file lacks
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="missing keys.*label_embed"):
        DiT.from_pretrained(tmp_path)
    payload["config"]["bogus"] = 1
    (tmp_path / "config.json").write_text(json.dumps(payload))
    with pytest.raises(ValueError, match="bogus"):
        DiT.from_pretrained(tmp_path)
