"""Weight conversion from diffusers models into multidiff backbones.

``DiTTransformer2DModel`` (diffusers) -> :class:`multidiff.nn.dit.DiT`. The two compute the same
function at the checkpoint's native resolution: diffusers' DiT takes integer-like ``timestep`` and
``class_labels``; the multidiff DiT takes ``c_noise = timestep`` (float) and ``labels``.

diffusers gives every block its own copy of the timestep and label embedders, while the original DiT
(Peebles and Xie 2023) shares one; checkpoints converted from the original hold identical copies.
multidiff shares one embedder, so conversion requires the copies to agree and raises otherwise.

diffusers is not imported here: the functions take a state dict and a config mapping (``model.config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from multidiff.nn.dit import DiT, DiTConfig

__all__ = ["dit_config_from_diffusers", "dit_state_dict_from_diffusers", "dit_from_diffusers"]


def _need(config: Mapping[str, Any], key: str) -> Any:
    if key not in config:
        raise ValueError(f"diffusers DiT config lacks {key!r}")
    return config[key]


def dit_config_from_diffusers(config: Mapping[str, Any]) -> DiTConfig:
    """Translate a ``DiTTransformer2DModel`` config into a :class:`DiTConfig`.

    Raises:
        ValueError: A setting that the multidiff DiT cannot reproduce (norm type, activation, biases).
    """
    if _need(config, "norm_type") != "ada_norm_zero":
        raise ValueError(f"only norm_type='ada_norm_zero' DiTs convert, got {config['norm_type']!r}")
    if _need(config, "activation_fn") != "gelu-approximate":
        raise ValueError(
            f"only activation_fn='gelu-approximate' DiTs convert, got {config['activation_fn']!r}"
        )
    if not _need(config, "attention_bias"):
        raise ValueError("only DiTs with attention_bias=True convert")
    if _need(config, "norm_elementwise_affine"):
        raise ValueError("only DiTs with norm_elementwise_affine=False convert")
    heads = int(_need(config, "num_attention_heads"))
    in_channels = int(_need(config, "in_channels"))
    out_channels = _need(config, "out_channels")
    p = int(_need(config, "patch_size"))
    return DiTConfig(
        in_channels=in_channels,
        out_channels=in_channels if out_channels is None else int(out_channels),
        patch=(p, p),
        width=heads * int(_need(config, "attention_head_dim")),
        depth=int(_need(config, "num_layers")),
        heads=heads,
        mlp_ratio=4.0,
        num_classes=int(_need(config, "num_embeds_ada_norm")),
        pos_embed="sincos",
        # diffusers: LayerNorm eps 1e-6 before attention and in the output layer, config norm_eps before
        # the MLP (1e-5 by default); one eps serves all three here, the difference is below 1e-5 relative.
        norm_eps=1e-6,
        noise_freq_dim=256,
        noise_freq_shift=1.0,  # diffusers' Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=1)
    )


def dit_state_dict_from_diffusers(
    state_dict: Mapping[str, torch.Tensor], config: DiTConfig
) -> dict[str, torch.Tensor]:
    """Rename and reshape a ``DiTTransformer2DModel`` state dict into :class:`DiT` keys.

    Raises:
        ValueError: A key is missing, or the per-block embedders differ from block 0's.
    """
    sd = dict(state_dict)

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"diffusers DiT state dict lacks {key!r}")
        return sd[key]

    D = config.width
    out: dict[str, torch.Tensor] = {}
    out["x_embed.weight"] = take("pos_embed.proj.weight").reshape(D, -1)  # (D, C·p·p), order (C, p, p)
    out["x_embed.bias"] = take("pos_embed.proj.bias")
    emb = "transformer_blocks.{i}.norm1.emb."
    shared = {
        "noise_embed.fc1.weight": "timestep_embedder.linear_1.weight",
        "noise_embed.fc1.bias": "timestep_embedder.linear_1.bias",
        "noise_embed.fc2.weight": "timestep_embedder.linear_2.weight",
        "noise_embed.fc2.bias": "timestep_embedder.linear_2.bias",
        "label_embed.table.weight": "class_embedder.embedding_table.weight",
    }
    for ours, theirs in shared.items():
        ref = take(emb.format(i=0) + theirs)
        for i in range(1, config.depth):
            other = take(emb.format(i=i) + theirs)
            if other.shape != ref.shape or not torch.equal(other, ref):
                raise ValueError(
                    f"block {i}'s {theirs} differs from block 0's; multidiff's DiT shares one embedder "
                    "(as the original DiT does), so this checkpoint cannot be converted exactly"
                )
        out[ours] = ref
    for i in range(config.depth):
        src, dst = f"transformer_blocks.{i}.", f"blocks.{i}."
        out[dst + "ada.proj.weight"] = take(src + "norm1.linear.weight")
        out[dst + "ada.proj.bias"] = take(src + "norm1.linear.bias")
        qkv = ("to_q", "to_k", "to_v")
        out[dst + "attn.to_qkv.weight"] = torch.cat([take(f"{src}attn1.{n}.weight") for n in qkv], dim=0)
        out[dst + "attn.to_qkv.bias"] = torch.cat([take(f"{src}attn1.{n}.bias") for n in qkv], dim=0)
        out[dst + "attn.proj.weight"] = take(src + "attn1.to_out.0.weight")
        out[dst + "attn.proj.bias"] = take(src + "attn1.to_out.0.bias")
        out[dst + "mlp.fc1.weight"] = take(src + "ff.net.0.proj.weight")
        out[dst + "mlp.fc1.bias"] = take(src + "ff.net.0.proj.bias")
        out[dst + "mlp.fc2.weight"] = take(src + "ff.net.2.weight")
        out[dst + "mlp.fc2.bias"] = take(src + "ff.net.2.bias")
    # Output layer: (shift, scale) from proj_out_1, patch features ordered (p, p, C) as in diffusers.
    out["final_ada.proj.weight"] = take("proj_out_1.weight")
    out["final_ada.proj.bias"] = take("proj_out_1.bias")
    out["final_proj.weight"] = take("proj_out_2.weight")
    out["final_proj.bias"] = take("proj_out_2.bias")
    return out


def dit_from_diffusers(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> DiT:
    """Build a multidiff :class:`DiT` equal to a diffusers ``DiTTransformer2DModel``.

    Args:
        state_dict: ``model.state_dict()`` of the diffusers model.
        config: ``model.config`` of the diffusers model.

    Returns:
        The DiT in float32 on the CPU, in eval mode. Call it as ``dit(x, timestep.float(), labels=...)``.

    Raises:
        ValueError: The model uses settings that do not convert, or the weights do not fit.
    """
    cfg = dit_config_from_diffusers(config)
    model = DiT(cfg)
    weights = dit_state_dict_from_diffusers(state_dict, cfg)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    wrong = [k for k in weights if k in expected and weights[k].shape != expected[k].shape]
    if missing or wrong:
        raise ValueError(f"converted DiT weights do not fit: missing {missing}, wrong shapes {wrong}")
    model.load_state_dict({k: v.float().cpu() for k, v in weights.items()}, strict=True)
    return model.eval()
