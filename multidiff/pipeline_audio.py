"""Waveforms from a mel-spectrogram diffusion model: :class:`AudioPipeline` and the mel-frame mask of known audio."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from multidiff.core.denoiser import Denoiser
from multidiff.modalities.base import Extent
from multidiff.modalities.mel import mel_frame_mask
from multidiff.nn.graphs import CudaGraphed, replayer, use_graphs
from multidiff.pipeline import Pipeline

__all__ = ["AudioPipeline", "mel_frame_mask"]


class AudioPipeline(Pipeline):
    """Waveforms from a mel-spectrogram diffusion model (a :class:`~multidiff.modalities.audio.MelAdapter`).

    Latents are normalised log-mels ``[B, C, M, T]``; time is the last axis.

    Args:
        denoiser: The denoiser over mel latents.
        adapter: The :class:`MelAdapter` (with its fitted statistics and vocoder).
        **kwargs: As for :class:`Pipeline` (``window`` counts mel frames).
    """

    time_axis: ClassVar[int] = -1
    modality: ClassVar[str | None] = "audio"

    def __init__(self, denoiser: Denoiser, adapter: nn.Module, **kwargs: Any) -> None:
        from multidiff.modalities.audio import MelAdapter

        if not isinstance(adapter, MelAdapter):
            raise ValueError(f"AudioPipeline needs a MelAdapter, got {type(adapter).__name__}")
        super().__init__(denoiser, adapter, **kwargs)
        self._graphed_vocoder: CudaGraphed | None = None  # made on the first graphed decode, dropped by to()

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> AudioPipeline:
        """As :meth:`Pipeline.to`; the vocoder's graphs, which belong to the old device, are dropped."""
        before = self.device
        super().to(device, dtype)
        if self.device != before:
            self._graphed_vocoder = None
        return self

    def replayed_vocoder(self) -> CudaGraphed:
        """The adapter's vocoder replayed from CUDA graphs (kept across calls, so later calls replay).

        Griffin-Lim's iterations are about 1,500 small kernels, launch-bound for one clip the way a
        small denoiser is; one graph per mel shape replays them with one call (see
        :class:`~multidiff.nn.graphs.CudaGraphed`). :meth:`generate` decodes through it when ``graphs`` is
        on (the default on CUDA).
        """
        vocoder = self.adapter.vocoder  # type: ignore[union-attr]
        self._graphed_vocoder = replayer(self._graphed_vocoder, vocoder)
        return self._graphed_vocoder

    @property
    def sample_rate(self) -> int:
        """Sampling rate of the generated audio in Hz."""
        return self.adapter.spec.sample_rate  # type: ignore[union-attr]

    @property
    def channels(self) -> int:
        """Audio channels C (1 mono, 2 stereo)."""
        return self.adapter.config.channels  # type: ignore[union-attr]

    def num_samples(self, seconds: float) -> int:
        """Waveform length N of ``seconds``."""
        if not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        return int(round(seconds * self.sample_rate))

    def default_extent(self) -> Extent:
        """The training clip length, where recorded (``window`` mel frames)."""
        if not self.window:
            return Extent()
        return Extent(seconds=self.adapter.spec.num_samples(self.window) / self.sample_rate)  # type: ignore[union-attr]

    def generate(self, num: int, seconds: float | Extent | None = None, **kwargs: Any) -> Tensor:  # type: ignore[override]
        """Generate ``num`` clips of ``seconds`` (:meth:`Pipeline.generate` with ``Extent(seconds=...)``).

        Longer than the training clips is done with overlapping windows. ``known`` is audio ``[C, N']`` or
        ``[B, C, N']`` at :attr:`sample_rate` (zero-padded or cut to the length): kept where ``mask`` (samples
        ``[N']`` or ``[B, N']``) is 1, or the input of audio-to-audio with ``strength``. Other keywords: steps,
        sampler, guidance, label, prompt, seed, callback, progress and the rest of :meth:`Pipeline.sample`.

        Returns:
            Waveforms ``[B, C, N]`` at :attr:`sample_rate`, ``N = round(seconds · sample_rate)``.
        """
        extent = seconds if isinstance(seconds, Extent) else Extent(seconds=seconds)
        if use_graphs(kwargs.get("graphs"), self.device):  # the vocoder replayed too, as the denoiser is
            graphed = self.replayed_vocoder()

            def vocoder(mel: Tensor) -> Tensor:
                with torch.no_grad():  # graphs replay only without gradients
                    return graphed(mel)

            kwargs["decode"] = {"vocoder": vocoder, **dict(kwargs.get("decode") or {})}
        return super().generate(num, extent, **kwargs)

    def continue_audio(self, clip: Tensor, seconds: float, **kwargs: Any) -> Tensor:
        """Continue ``clip`` (``[C, N']`` or ``[B, C, N']``) to a total of ``seconds``; keywords as :meth:`generate`.

        The clip's frames are kept (inpainting of the rest); the output starts with the re-vocoded clip.
        """
        clip = torch.as_tensor(clip)
        if self.num_samples(seconds) <= clip.shape[-1]:
            raise ValueError(
                f"the clip is already {clip.shape[-1] / self.sample_rate:.2f} s; continue it to more than that"
            )
        mask = torch.zeros(self.num_samples(seconds))
        mask[: clip.shape[-1]] = 1
        num = kwargs.pop("num", clip.shape[0] if clip.ndim == 3 else 1)
        return self.generate(num, seconds, known=clip, mask=mask, **kwargs)

    def audio_to_audio(self, wave: Tensor, strength: float, **kwargs: Any) -> Tensor:
        """SDEdit on ``wave`` (``[C, N]`` or ``[B, C, N]``): keep its length; keywords as :meth:`generate`."""
        wave = torch.as_tensor(wave)
        num = kwargs.pop("num", wave.shape[0] if wave.ndim == 3 else 1)
        return self.generate(num, wave.shape[-1] / self.sample_rate, known=wave, strength=strength, **kwargs)
