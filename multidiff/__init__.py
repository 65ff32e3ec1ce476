"""multidiff: diffusion models for audio, video and image latents through one σ-space core."""

__version__ = "0.1.0.dev0"
