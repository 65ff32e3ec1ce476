"""Weight conversion between diffusers models and multidiff backbones.

``DiTTransformer2DModel`` (diffusers) <-> :class:`multidiff.nn.dit.DiT`. The two compute the same
function at the checkpoint's native resolution: diffusers' DiT takes integer-like ``timestep`` and
``class_labels``; the multidiff DiT takes ``c_noise = timestep`` (float) and ``labels``.

diffusers gives every block its own copy of the timestep and label embedders, while the original DiT
(Peebles and Xie 2023) shares one; checkpoints converted from the original hold identical copies.
multidiff shares one embedder, so conversion requires the copies to agree and raises otherwise.

The import direction takes a state dict and a config mapping (``model.config``) and does not import
diffusers. The export direction (:func:`dit_to_diffusers`, :func:`save_dit_as_diffusers`) is its inverse:
it writes the shared embedders into every block and builds the diffusers model, importing diffusers
inside the function. Settings the diffusers class cannot express are refused, naming the setting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from multidiff.nn.dit import DiT, DiTConfig

__all__ = [
    "dit_config_from_diffusers",
    "dit_state_dict_from_diffusers",
    "dit_from_diffusers",
    "dit_config_to_diffusers",
    "dit_state_dict_to_diffusers",
    "dit_to_diffusers",
    "save_dit_as_diffusers",
]


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


#: The embedders multidiff's DiT shares -> their name in every diffusers block's ``norm1.emb.``.
_SHARED_EMBEDDERS: dict[str, str] = {
    "noise_embed.fc1.weight": "timestep_embedder.linear_1.weight",
    "noise_embed.fc1.bias": "timestep_embedder.linear_1.bias",
    "noise_embed.fc2.weight": "timestep_embedder.linear_2.weight",
    "noise_embed.fc2.bias": "timestep_embedder.linear_2.bias",
    "label_embed.table.weight": "class_embedder.embedding_table.weight",
}

#: Per-block tensors that convert as they are: name under ``blocks.{i}.`` -> name under
#: ``transformer_blocks.{i}.`` (the fused ``attn.to_qkv`` is split into ``attn1.to_q/k/v``).
_BLOCK_KEYS: dict[str, str] = {
    "ada.proj.weight": "norm1.linear.weight",
    "ada.proj.bias": "norm1.linear.bias",
    "attn.proj.weight": "attn1.to_out.0.weight",
    "attn.proj.bias": "attn1.to_out.0.bias",
    "mlp.fc1.weight": "ff.net.0.proj.weight",
    "mlp.fc1.bias": "ff.net.0.proj.bias",
    "mlp.fc2.weight": "ff.net.2.weight",
    "mlp.fc2.bias": "ff.net.2.bias",
}
_QKV = ("to_q", "to_k", "to_v")

#: The output layer: (shift, scale) from ``proj_out_1``, patch features ordered (p, p, C) as in diffusers.
_FINAL_KEYS: dict[str, str] = {
    "final_ada.proj.weight": "proj_out_1.weight",
    "final_ada.proj.bias": "proj_out_1.bias",
    "final_proj.weight": "proj_out_2.weight",
    "final_proj.bias": "proj_out_2.bias",
}


def _taker(state_dict: Mapping[str, torch.Tensor], whose: str) -> Callable[[str], torch.Tensor]:
    """``take(key)``: ``state_dict[key]``, or a ValueError naming the key missing from ``whose`` state dict."""
    sd = dict(state_dict)

    def take(key: str) -> torch.Tensor:
        if key not in sd:
            raise ValueError(f"{whose} DiT state dict lacks {key!r}")
        return sd[key]

    return take


def dit_state_dict_from_diffusers(
    state_dict: Mapping[str, torch.Tensor], config: DiTConfig
) -> dict[str, torch.Tensor]:
    """Rename and reshape a ``DiTTransformer2DModel`` state dict into :class:`DiT` keys.

    Raises:
        ValueError: A key is missing, or the per-block embedders differ from block 0's.
    """
    take = _taker(state_dict, "diffusers")
    D = config.width
    out: dict[str, torch.Tensor] = {}
    out["x_embed.weight"] = take("pos_embed.proj.weight").reshape(D, -1)  # (D, C·p·p), order (C, p, p)
    out["x_embed.bias"] = take("pos_embed.proj.bias")
    emb = "transformer_blocks.{i}.norm1.emb."
    for ours, theirs in _SHARED_EMBEDDERS.items():
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
        for ours, theirs in _BLOCK_KEYS.items():
            out[dst + ours] = take(src + theirs)
        for kind in ("weight", "bias"):  # (3D, D) and (3D,): q, k, v stacked
            out[f"{dst}attn.to_qkv.{kind}"] = torch.cat([take(f"{src}attn1.{n}.{kind}") for n in _QKV], dim=0)
    for ours, theirs in _FINAL_KEYS.items():
        out[ours] = take(theirs)
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


# ---------------------------------------------------------------------------------------------------
# Export: multidiff DiT -> diffusers DiTTransformer2DModel
# ---------------------------------------------------------------------------------------------------

# The DiTConfig fields the diffusers class fixes, with the only value it can express.
_FIXED_FOR_EXPORT: dict[str, Any] = {
    "pos_embed": "sincos",
    "attention": "joint",
    "qk_norm": False,
    "context_dim": None,
    "cond_channels": 0,
    "mlp_ratio": 4.0,
    "norm_eps": 1e-6,
    "noise_freq_dim": 256,
    "noise_freq_shift": 1.0,
}


def dit_config_to_diffusers(config: DiTConfig, sample_size: int) -> dict[str, Any]:
    """The ``DiTTransformer2DModel`` config of a multidiff :class:`DiTConfig` (inverse of
    :func:`dit_config_from_diffusers`).

    Args:
        config: The multidiff DiT's config.
        sample_size: Side of the square latent the diffusers model is built for (its fixed sin-cos table
            is made for ``sample_size // patch`` positions per side; multidiff computes it per input).

    Raises:
        ValueError: A setting the diffusers DiT cannot express (named with the value it needs).
    """
    for name, need in _FIXED_FOR_EXPORT.items():
        have = getattr(config, name)
        if have != need:
            raise ValueError(
                f"DiTConfig.{name}={have!r} cannot be exported to a diffusers DiTTransformer2DModel "
                f"(it supports only {name}={need!r})"
            )
    if len(config.patch) != 2 or config.patch[0] != config.patch[1]:
        raise ValueError(
            f"DiTConfig.patch={config.patch} cannot be exported: DiTTransformer2DModel takes square 2-D patches"
        )
    if config.num_classes is None:
        raise ValueError(
            "DiTConfig.num_classes=None cannot be exported: DiTTransformer2DModel is class-conditional"
        )
    p = config.patch[0]
    if isinstance(sample_size, bool) or int(sample_size) < p or int(sample_size) % p:
        raise ValueError(f"sample_size={sample_size!r} must be a positive multiple of the patch size {p}")
    return {
        "num_attention_heads": config.heads,
        "attention_head_dim": config.width // config.heads,
        "in_channels": config.in_channels,
        "out_channels": config.out_ch,
        "num_layers": config.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": int(sample_size),
        "patch_size": p,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": config.num_classes,
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": config.norm_eps,
    }


def dit_state_dict_to_diffusers(
    state_dict: Mapping[str, torch.Tensor], config: DiTConfig
) -> dict[str, torch.Tensor]:
    """Rename and reshape a :class:`DiT` state dict into ``DiTTransformer2DModel`` keys (inverse of
    :func:`dit_state_dict_from_diffusers`; the shared embedders are copied into every block).

    Raises:
        ValueError: A key is missing.
    """
    take = _taker(state_dict, "multidiff")
    D, p = config.width, config.patch[0]
    out: dict[str, torch.Tensor] = {}
    out["pos_embed.proj.weight"] = take("x_embed.weight").reshape(D, config.in_channels, p, p)
    out["pos_embed.proj.bias"] = take("x_embed.bias")
    for i in range(config.depth):
        src, dst = f"blocks.{i}.", f"transformer_blocks.{i}."
        for ours, theirs in _SHARED_EMBEDDERS.items():
            out[f"{dst}norm1.emb.{theirs}"] = take(ours).clone()
        for ours, theirs in _BLOCK_KEYS.items():
            out[dst + theirs] = take(src + ours)
        for kind in ("weight", "bias"):
            for name, part in zip(_QKV, take(f"{src}attn.to_qkv.{kind}").chunk(3, dim=0)):
                out[f"{dst}attn1.{name}.{kind}"] = part.clone()
    for ours, theirs in _FINAL_KEYS.items():
        out[theirs] = take(ours)
    return out


def dit_to_diffusers(dit: DiT, sample_size: int) -> Any:
    """A diffusers ``DiTTransformer2DModel`` computing the same function as ``dit`` at ``sample_size``.

    Call the result as ``model(x, timestep, class_labels=labels).sample`` where the multidiff DiT is called
    as ``dit(x, timestep.float(), labels=labels)``.

    Args:
        dit: A class-conditional 2-D multidiff DiT with sin-cos positions (see
            :func:`dit_config_to_diffusers` for every condition).
        sample_size: Side of the square latent input.

    Returns:
        The diffusers model, float32 on the CPU, in eval mode.

    Raises:
        ValueError: The DiT uses a setting the diffusers class cannot express, or the weights do not fit.
    """
    from diffusers import DiTTransformer2DModel

    if not isinstance(dit, DiT):
        raise ValueError(f"dit_to_diffusers needs a multidiff DiT, got {type(dit).__name__}")
    config = dit_config_to_diffusers(dit.config, sample_size)
    model = DiTTransformer2DModel(**config)
    weights = dit_state_dict_to_diffusers(dit.state_dict(), dit.config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    wrong = [k for k in weights if k in expected and weights[k].shape != expected[k].shape]
    if missing or extra or wrong:
        raise ValueError(
            f"exported DiT weights do not fit DiTTransformer2DModel: missing {missing}, unexpected {extra}, "
            f"wrong shapes {wrong}"
        )
    model.load_state_dict({k: v.detach().float().cpu() for k, v in weights.items()}, strict=True)
    return model.eval()


def save_dit_as_diffusers(dit: DiT, folder: str | os.PathLike[str], sample_size: int) -> Path:
    """Write ``dit`` as a diffusers ``DiTTransformer2DModel`` folder (``config.json`` and safetensors),
    loadable with ``DiTTransformer2DModel.from_pretrained(folder)``.

    Raises:
        ValueError: As :func:`dit_to_diffusers`; and for a folder holding a multidiff pipeline or a diffusers
            pipeline, whose ``config.json`` this would replace.
    """
    from multidiff.serialize import folder_kind

    out = Path(folder)
    if folder_kind(out) in ("diffusers-pipeline", "multidiff"):
        raise ValueError(f"{out} holds a pipeline; write the diffusers model into a new folder")
    dit_to_diffusers(dit, sample_size).save_pretrained(str(out), safe_serialization=True)
    return out
