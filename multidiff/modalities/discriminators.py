"""HiFi-GAN discriminators and the vocoder training losses (Kong et al. 2020, Sec. 2.2-2.3).

* :class:`PeriodDiscriminator` / multi-period discriminator (MPD): the waveform ``[B, 1, N]`` is folded
  into ``[B, 1, N / p, p]`` so 2-D convolutions with ``(k, 1)`` kernels see every p-th sample; periods
  2, 3, 5, 7, 11 (primes, so the sub-discriminators overlap little).
* :class:`ScaleDiscriminator` / multi-scale discriminator (MSD) of MelGAN (Kumar et al. 2019): grouped
  1-D convolutions on the raw waveform and on two average-pooled versions; the raw scale uses spectral
  normalisation (Miyato et al. 2018), the others weight normalisation (Salimans & Kingma 2016).
* Losses: least-squares GAN (Mao et al. 2017, HiFi-GAN Eq. 1-2), feature matching (Larsen et al. 2016,
  HiFi-GAN Eq. 4), and the multi-resolution STFT loss of Parallel WaveGAN (Yamamoto et al. 2020, Eq. 1-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations

__all__ = [
    "DiscriminatorConfig",
    "HiFiGANDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleDiscriminator",
    "PeriodDiscriminator",
    "ScaleDiscriminator",
    "STFT_RESOLUTIONS",
    "apply_weight_norm",
    "discriminator_loss",
    "feature_matching_loss",
    "generator_adversarial_loss",
    "multi_resolution_stft_loss",
]

_SLOPE = 0.1  # leaky ReLU slope of every HiFi-GAN discriminator layer

# (n_fft, hop, win) of Yamamoto et al. 2020, Sec. 2.3.
STFT_RESOLUTIONS: tuple[tuple[int, int, int], ...] = ((1024, 120, 600), (2048, 240, 1200), (512, 50, 240))


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of the HiFi-GAN discriminators; the defaults are the paper's.

    Attributes:
        periods: One period sub-discriminator per entry.
        period_channels: Output widths of the period discriminators' strided ``(k, 1)`` convolutions;
            the last one has stride 1.
        period_kernel: Kernel length k along the folded time axis.
        period_stride: Stride of all but the last convolution.
        scales: Number of scale sub-discriminators (the waveform pooled 0, 1, 2, ... times by 2).
        scale_channels: Output widths of the scale discriminators' convolutions.
        scale_kernels: Their kernels.
        scale_strides: Their strides.
        scale_groups: Their groups (each must divide the input and output width).
    """

    periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    period_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    period_kernel: int = 5
    period_stride: int = 3
    scales: int = 3
    scale_channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024)
    scale_kernels: tuple[int, ...] = (15, 41, 41, 41, 41, 41, 5)
    scale_strides: tuple[int, ...] = (1, 2, 2, 4, 4, 1, 1)
    scale_groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)

    def __post_init__(self) -> None:
        for name in ("periods", "period_channels", "scale_channels", "scale_kernels", "scale_strides",
                     "scale_groups"):  # fmt: skip
            value = tuple(int(v) for v in getattr(self, name))
            object.__setattr__(self, name, value)
            if any(v < 1 for v in value):
                raise ValueError(f"DiscriminatorConfig.{name} must hold positive ints, got {value}")
        if not self.periods and self.scales == 0:
            raise ValueError("DiscriminatorConfig needs at least one period or one scale")
        if self.periods and not self.period_channels:
            raise ValueError("DiscriminatorConfig.period_channels must not be empty")
        if self.period_kernel < 1 or self.period_kernel % 2 == 0 or self.period_stride < 1:
            raise ValueError(
                f"DiscriminatorConfig needs an odd period_kernel >= 1 and period_stride >= 1, got "
                f"{self.period_kernel} and {self.period_stride}"
            )
        if self.scales < 0:
            raise ValueError(f"DiscriminatorConfig.scales must be >= 0, got {self.scales}")
        n = len(self.scale_channels)
        if self.scales and (
            n == 0 or not len(self.scale_kernels) == len(self.scale_strides) == len(self.scale_groups) == n
        ):
            raise ValueError(
                "DiscriminatorConfig.scale_channels, scale_kernels, scale_strides and scale_groups need "
                f"the same non-zero length, got {n}, {len(self.scale_kernels)}, {len(self.scale_strides)} "
                f"and {len(self.scale_groups)}"
            )
        c_in = 1
        for c, k, g in zip(self.scale_channels, self.scale_kernels, self.scale_groups):
            if c_in % g or c % g or k % 2 == 0:
                raise ValueError(
                    f"DiscriminatorConfig scale layer {c_in}->{c} with kernel {k} and groups {g}: "
                    "groups must divide both widths and the kernel must be odd"
                )
            c_in = c

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return {
            "periods": list(self.periods),
            "period_channels": list(self.period_channels),
            "period_kernel": self.period_kernel,
            "period_stride": self.period_stride,
            "scales": self.scales,
            "scale_channels": list(self.scale_channels),
            "scale_kernels": list(self.scale_kernels),
            "scale_strides": list(self.scale_strides),
            "scale_groups": list(self.scale_groups),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DiscriminatorConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)

    @classmethod
    def tiny(cls) -> DiscriminatorConfig:
        """A few thousand parameters, for CPU tests."""
        return cls(
            periods=(2, 3),
            period_channels=(4, 8, 8),
            scales=2,
            scale_channels=(8, 8, 16, 16),
            scale_kernels=(15, 41, 41, 5),
            scale_strides=(1, 4, 4, 1),
            scale_groups=(1, 4, 4, 1),
        )


def apply_weight_norm(module: nn.Module) -> nn.Module:
    """Weight-normalise every convolution of ``module`` in place (``w = g v / ||v||``, norm over dim 0).

    Uses ``torch.nn.utils.parametrizations.weight_norm``; the state dict then holds
    ``*.parametrizations.weight.original0`` (g) and ``original1`` (v), which
    :func:`multidiff.modalities.vocoders.fold_weight_norm` folds back into plain weights.
    """
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose1d)):
            parametrizations.weight_norm(m, "weight", dim=0)
    return module


class PeriodDiscriminator(nn.Module):
    """One sub-discriminator of the MPD (Kong et al. 2020, Sec. 2.2, Fig. 2b).

    Args:
        period: The period p.
        channels: Output widths; stride ``stride`` on all but the last layer.
        kernel: Kernel length along the folded axis.
        stride: Stride along the folded axis.
    """

    def __init__(self, period: int, channels: Sequence[int], kernel: int = 5, stride: int = 3) -> None:
        super().__init__()
        self.period = period
        pad = (kernel - 1) // 2
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, (kernel, 1), (stride if i < len(channels) - 1 else 1, 1), (pad, 0))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.conv_post = nn.Conv2d(widths[-1], 1, (3, 1), 1, (1, 0))
        apply_weight_norm(self)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score a waveform ``[B, 1, N]``: ``(scores [B, S], feature maps)``."""
        b, c, n = y.shape
        p = self.period
        if n % p:
            y = F.pad(y, (0, p - n % p), mode="reflect")  # (B, 1, N')
        x = y.view(b, c, -1, p)  # (B, 1, N'/p, p)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _SLOPE)  # (B, D, N'', p)
            feats.append(x)
        x = self.conv_post(x)  # (B, 1, N'', p)
        feats.append(x)
        return x.flatten(1), feats


class ScaleDiscriminator(nn.Module):
    """One sub-discriminator of the MSD (Kumar et al. 2019, MelGAN; Kong et al. 2020, Fig. 2a).

    Args:
        channels, kernels, strides, groups: One entry per grouped convolution.
        spectral_norm: Spectral instead of weight normalisation (HiFi-GAN uses it on the raw scale).
    """

    def __init__(
        self,
        channels: Sequence[int],
        kernels: Sequence[int],
        strides: Sequence[int],
        groups: Sequence[int],
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        widths = [1, *channels]
        self.convs = nn.ModuleList(
            nn.Conv1d(c_in, c_out, k, s, padding=(k - 1) // 2, groups=g)
            for c_in, c_out, k, s, g in zip(widths[:-1], widths[1:], kernels, strides, groups)
        )
        self.conv_post = nn.Conv1d(widths[-1], 1, 3, 1, padding=1)
        if spectral_norm:
            for m in [*self.convs, self.conv_post]:
                parametrizations.spectral_norm(m, "weight")
        else:
            apply_weight_norm(self)

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score a waveform ``[B, 1, N]``: ``(scores [B, S], feature maps)``."""
        x, feats = y, []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), _SLOPE)  # (B, D, N')
            feats.append(x)
        x = self.conv_post(x)  # (B, 1, N')
        feats.append(x)
        return x.flatten(1), feats


class MultiPeriodDiscriminator(nn.Module):
    """The MPD: one :class:`PeriodDiscriminator` per period."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            PeriodDiscriminator(p, config.period_channels, config.period_kernel, config.period_stride)
            for p in config.periods
        )

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Scores and feature maps of every period."""
        outs = [d(y) for d in self.discriminators]
        return [o[0] for o in outs], [o[1] for o in outs]


class MultiScaleDiscriminator(nn.Module):
    """The MSD: :class:`ScaleDiscriminator` on the waveform pooled 0, 1, 2, ... times (AvgPool 4, stride 2)."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(
                config.scale_channels,
                config.scale_kernels,
                config.scale_strides,
                config.scale_groups,
                spectral_norm=(i == 0),
            )
            for i in range(config.scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Scores and feature maps of every scale."""
        scores, feats = [], []
        for i, d in enumerate(self.discriminators):
            if i > 0:
                y = self.pool(y)  # (B, 1, N / 2^i)
            s, f = d(y)
            scores.append(s)
            feats.append(f)
        return scores, feats


class HiFiGANDiscriminator(nn.Module):
    """MPD and MSD together; ``forward`` returns the scores and feature maps of all sub-discriminators.

    Args:
        config: Sizes (default: the paper's).
    """

    def __init__(self, config: DiscriminatorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DiscriminatorConfig()
        self.mpd = MultiPeriodDiscriminator(self.config)
        self.msd = MultiScaleDiscriminator(self.config)

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """Score a waveform ``[B, N]`` or ``[B, 1, N]``.

        Returns:
            ``(scores, features)``: one ``[B, S_k]`` score map and one list of feature maps per
            sub-discriminator (periods first, then scales).
        """
        if y.ndim == 2:
            y = y.unsqueeze(1)  # (B, 1, N)
        if y.ndim != 3 or y.shape[1] != 1:
            raise ValueError(
                f"HiFiGANDiscriminator expects a waveform [B, N] or [B, 1, N], got {tuple(y.shape)}"
            )
        s1, f1 = self.mpd(y)
        s2, f2 = self.msd(y)
        return s1 + s2, f1 + f2


# --------------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------------


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Least-squares discriminator loss (HiFi-GAN Eq. 1): ``sum_k E[(D_k(x) - 1)^2] + E[D_k(G(s))^2]``."""
    return sum(((1 - r.float()) ** 2).mean() + (f.float() ** 2).mean() for r, f in zip(real, fake))  # type: ignore[return-value]


def generator_adversarial_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """Least-squares generator loss (HiFi-GAN Eq. 2): ``sum_k E[(D_k(G(s)) - 1)^2]``."""
    return sum(((1 - f.float()) ** 2).mean() for f in fake)  # type: ignore[return-value]


def feature_matching_loss(
    real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]]
) -> torch.Tensor:
    """Feature matching (HiFi-GAN Eq. 4): ``sum_k sum_i E|D_k^i(x) - D_k^i(G(s))|``, real maps detached.

    (The per-layer mean plays the role of the paper's ``1 / N_i``; HiFi-GAN weights this term by 2.)
    """
    return sum(  # type: ignore[return-value]
        (r.detach().float() - f.float()).abs().mean() for rs, fs in zip(real, fake) for r, f in zip(rs, fs)
    )


def _stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    window = torch.hann_window(win, device=x.device, dtype=torch.float32)
    spec = torch.stft(x.float(), n_fft, hop, win, window, center=True, return_complex=True)  # (B, K, T)
    return spec.abs().clamp_min(1e-7)


def multi_resolution_stft_loss(
    y_hat: torch.Tensor,
    y: torch.Tensor,
    resolutions: Sequence[tuple[int, int, int]] = STFT_RESOLUTIONS,
) -> torch.Tensor:
    """Multi-resolution STFT loss (Yamamoto et al. 2020, Eq. 1-4), averaged over the resolutions.

    Per resolution: spectral convergence ``||S - S_hat||_F / ||S||_F`` plus log-magnitude L1
    ``mean |log S - log S_hat|``, with S the STFT magnitude of the target.

    Args:
        y_hat: Generated waveform ``[B, N]``.
        y: Target waveform ``[B, N]``.
        resolutions: ``(n_fft, hop, win)`` triples.
    """
    if y_hat.shape != y.shape or y.ndim != 2:
        raise ValueError(
            f"expected two waveforms [B, N] of one shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}"
        )
    total = y.new_zeros((), dtype=torch.float32)
    for n_fft, hop, win in resolutions:
        s_hat = _stft_magnitude(y_hat, n_fft, hop, win)  # (B, K, T)
        s = _stft_magnitude(y, n_fft, hop, win)  # (B, K, T)
        sc = torch.linalg.vector_norm(s - s_hat, dim=(1, 2)) / torch.linalg.vector_norm(s, dim=(1, 2))  # (B,)
        mag = (s.log() - s_hat.log()).abs().mean()
        total = total + sc.mean() + mag
    return total / len(resolutions)
