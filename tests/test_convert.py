"""Parity of diffusers DiTTransformer2DModel -> multidiff DiT weight conversion."""

from __future__ import annotations

import pytest
import torch

from multidiff.interop.convert import dit_config_from_diffusers, dit_from_diffusers


def _tiny_diffusers_dit(depth: int = 3, tie_embedders: bool = True):
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    ref = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=4,
        out_channels=8,
        num_layers=depth,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    with torch.no_grad():
        # Random weights everywhere, including the zero-initialised adaLN and output layers.
        for p in ref.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
        if tie_embedders:  # as in checkpoints converted from the original DiT: one shared embedder
            shared = ref.transformer_blocks[0].norm1.emb.state_dict()
            for block in ref.transformer_blocks[1:]:
                block.norm1.emb.load_state_dict(shared)
    return ref


def test_conversion_parity_float32_cpu() -> None:
    ref = _tiny_diffusers_dit()
    ours = dit_from_diffusers(ref.state_dict(), ref.config)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 4, 8, 8, generator=g)
    t = torch.tensor([0, 17, 500, 999])
    labels = torch.tensor([0, 3, 9, 10])  # 10 is the null label
    with torch.no_grad():
        expected = ref(x, t, class_labels=labels).sample
        got = ours(x, t.float(), labels=labels)
    assert got.shape == expected.shape == (4, 8, 8, 8)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 1e-4, rel.item()
    assert expected.abs().mean() > 0.1  # a meaningful, non-trivial output


def test_conversion_config() -> None:
    ref = _tiny_diffusers_dit(depth=2)
    cfg = dit_config_from_diffusers(ref.config)
    assert (cfg.width, cfg.heads, cfg.depth, cfg.patch) == (32, 2, 2, (2, 2))
    assert (cfg.in_channels, cfg.out_channels, cfg.num_classes, cfg.pos_embed) == (4, 8, 10, "sincos")


def test_conversion_rejects_untied_embedders_and_bad_configs() -> None:
    ref = _tiny_diffusers_dit(depth=2, tie_embedders=False)
    with pytest.raises(ValueError, match="differs from block 0"):
        dit_from_diffusers(ref.state_dict(), ref.config)
    cfg = dict(ref.config)
    cfg["activation_fn"] = "geglu"
    with pytest.raises(ValueError, match="activation_fn"):
        dit_config_from_diffusers(cfg)
    tied = _tiny_diffusers_dit(depth=2)
    sd = dict(tied.state_dict())
    del sd["proj_out_2.weight"]
    with pytest.raises(ValueError, match="proj_out_2.weight"):
        dit_from_diffusers(sd, tied.config)
