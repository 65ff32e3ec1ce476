"""multidiff.nn: backbones (DiT, U-Net) and the layers they share.

Every backbone follows one contract: ``forward(x, c_noise, *, labels=None, context=None,
context_mask=None, cond_channels=None) -> tensor`` shaped like x (with the model's output channels),
and saves/loads as a folder (``config.json`` + ``model.safetensors``) through :mod:`multidiff.nn.io`.
"""

from multidiff.nn.dit import DIT_PRESETS, DiT, DiTConfig, dit_from_preset
from multidiff.nn.io import PretrainedMixin
from multidiff.nn.unet import UNET_PRESETS, UNet, UNetConfig, unet_from_preset

__all__ = [
    "DIT_PRESETS",
    "DiT",
    "DiTConfig",
    "dit_from_preset",
    "PretrainedMixin",
    "UNET_PRESETS",
    "UNet",
    "UNetConfig",
    "unet_from_preset",
]
