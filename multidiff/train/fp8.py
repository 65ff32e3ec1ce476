"""float8 training of the DiT's token-wise linears through torchao (an optional extra: ``multidiff[fp8]``).

Measured on an H200 (``benchmarks/fp8_map.py``, ``benchmarks/RESULTS.md``): float8 pays only where the matmuls
are large (width 2,048 at 4,096 tokens: 1.15x bf16 with tensorwise scaling) and is slower at the DiT-B and
DiT-XL widths, but it saves about a quarter of the training memory everywhere. The U-Nets' work is in
convolutions, which torchao's float8 training does not cover, so ``--fp8`` is for the DiT backbone only.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FP8_RECIPES", "fp8_filter", "fp8_unavailable", "to_float8_training"]

FP8_RECIPES = ("tensorwise", "rowwise")  # torchao's Float8LinearConfig.from_recipe_name


def fp8_unavailable(device: str | torch.device) -> str | None:
    """Why float8 training cannot run on ``device``, or None when it can (CUDA of compute capability 8.9 or
    more, Ada or Hopper, and torchao installed)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return f"needs CUDA, an NVIDIA GPU of compute capability 8.9 or more (the device is {str(device)!r})"
    cap = torch.cuda.get_device_capability(device)
    if cap < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"needs compute capability 8.9 or more (Ada, Hopper); {name} has {cap[0]}.{cap[1]}"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return 'needs torchao: pip install "multidiff[fp8]"'
    return None


def fp8_filter(module: nn.Module, fqn: str) -> bool:
    """The linears float8 converts: the DiT blocks' attention and MLP projections (token-wise, the large
    matmuls) whose sizes are multiples of 16; not the embedders, the adaLN projections (one row per sample)
    or the output layer."""
    in_block = fqn.startswith("blocks.") and (".attn." in fqn or ".mlp." in fqn)
    sizes_ok = (
        isinstance(module, nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0
    )
    return in_block and sizes_ok


def to_float8_training(backbone: nn.Module, recipe: str) -> nn.Module:
    """Swap :func:`fp8_filter`'s linears of ``backbone`` (in place) for torchao ``Float8Linear`` modules of
    scaling ``recipe`` (one of :data:`FP8_RECIPES`). The weights stay the same parameters, so an optimiser
    made before keeps them, and the state-dict keys are unchanged."""
    if recipe not in FP8_RECIPES:
        raise ValueError(f"float8 recipe must be one of {FP8_RECIPES}, got {recipe!r}")
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name(recipe)
    return convert_to_float8_training(backbone, config=config, module_filter_fn=fp8_filter)
